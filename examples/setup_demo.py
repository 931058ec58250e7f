"""Create a customer, a staff user, their tokens and a conversation for the other examples.

The conversation is assigned to the staff user (``PATCH /api/conversations/{id}``), so that
the staff user receives delivery status for the customer's messages (``read_receipts.py``).

Uses the admin endpoints with the service_role key and prints ``export`` lines for the shell:

    eval "$(RTM_URL=http://127.0.0.1:4000 RTM_SERVICE_KEY=... python examples/setup_demo.py)"
"""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

URL = os.environ.get("RTM_URL", "http://127.0.0.1:4000").rstrip("/")


def call(method: str, path: str, token: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        URL + path,
        method=method,
        data=json.dumps(body or {}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"]


def main() -> None:
    service_key = os.environ["RTM_SERVICE_KEY"]
    customer = call("POST", "/api/admin/customers", service_key, {"name": "Ada Customer"})
    staff = call("POST", "/api/admin/users", service_key, {"name": "Sam Agent"})
    path = f"/api/admin/customers/{customer['id']}/portal-tokens"
    customer_token = call("POST", path, service_key)["token"]
    staff_token = call("POST", f"/api/admin/users/{staff['id']}/tokens", service_key)["token"]
    conversation = call("POST", "/api/conversations", customer_token, {"subject": "My order"})
    assign = {"assignedUserId": staff["id"]}
    call("PATCH", f"/api/conversations/{conversation['id']}", staff_token, assign)
    print(f"export RTM_URL={URL}")
    print(f"export RTM_CUSTOMER_ID={customer['id']}")
    print(f"export RTM_USER_ID={staff['id']}")
    print(f"export RTM_CONVERSATION_ID={conversation['id']}")
    print(f"export CUSTOMER_TOKEN={customer_token}")
    print(f"export STAFF_TOKEN={staff_token}")


if __name__ == "__main__":
    main()
