#!/usr/bin/env bash
# A conversation through the HTTP API with curl, against a running `rtm serve`:
# a customer and a staff user, a conversation, two messages, a read receipt, unread going to 0.
#
#   bash examples/curl_demo.sh                # the server of `rtm serve` (port 4000, RTM_PORT)
#   bash examples/curl_demo.sh 5000           # the server of `rtm serve --port 5000`
#   bash examples/curl_demo.sh https://chat.example.com
#
# The server: the argument (a URL or a port), else RTM_URL, else RTM_HOST and RTM_PORT as
# `rtm serve` reads them. The service_role key: SERVICE_KEY, else `rtm keys` (run from the
# directory `rtm serve` was, so that it finds the same data directory or RTM_JWT_SECRET).
set -euo pipefail
target=${1:-${RTM_URL:-}}
if [[ -z $target ]]; then
    host=${RTM_HOST:-127.0.0.1}
    [[ $host == 0.0.0.0 || $host == :: || -z $host ]] && host=127.0.0.1
    [[ $host == *:* ]] && host="[$host]"  # an IPv6 address
    target="http://$host:${RTM_PORT:-4000}"
elif [[ $target =~ ^[0-9]+$ ]]; then
    target="http://127.0.0.1:$target"
fi
URL=${target%/}

if [[ -z ${SERVICE_KEY:-} ]]; then
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    rtm=$(command -v rtm || echo "$here/../.venv/bin/rtm")
    SERVICE_KEY=$("$rtm" keys --json \
        | python3 -c 'import sys, json; print(json.load(sys.stdin)["service_role_key"])')
fi
echo "server: $URL"

get() { python3 -c "import sys, json; print(json.load(sys.stdin)$1)"; }
call() {  # call METHOD PATH TOKEN [JSON]
    curl -sS --fail-with-body -X "$1" "$URL$2" -H "Authorization: Bearer $3" \
        -H 'Content-Type: application/json' ${4:+--data "$4"}
}

customer=$(call POST /api/admin/customers "$SERVICE_KEY" '{"name": "Ada Customer"}' | get '["data"]["id"]')
staff=$(call POST /api/admin/users "$SERVICE_KEY" '{"name": "Sam Agent"}' | get '["data"]["id"]')
customer_token=$(call POST "/api/admin/customers/$customer/portal-tokens" "$SERVICE_KEY" '{}' | get '["data"]["token"]')
staff_token=$(call POST "/api/admin/users/$staff/tokens" "$SERVICE_KEY" '{}' | get '["data"]["token"]')

conversation=$(call POST /api/conversations "$customer_token" '{"subject": "My order"}' | get '["data"]["id"]')
call POST "/api/conversations/$conversation/messages" "$customer_token" \
    '{"content": "Where is my order?", "clientMessageId": "ada-1"}' > /dev/null
reply=$(call POST "/api/conversations/$conversation/messages" "$staff_token" \
    '{"content": "It ships today."}' | get '["data"]["id"]')

echo "customer unread before: $(call GET /api/unread "$customer_token" | get '["data"]["total"]')"
call POST "/api/messages/$reply/read" "$customer_token" > /dev/null
echo "customer unread after: $(call GET /api/unread "$customer_token" | get '["data"]["total"]')"
echo "history:"
call GET "/api/conversations/$conversation/messages" "$customer_token" \
    | python3 -c 'import sys, json
for m in reversed(json.load(sys.stdin)["data"]["messages"]):
    print("  " + m["senderType"] + ": " + m["content"])'
