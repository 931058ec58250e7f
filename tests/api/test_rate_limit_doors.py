"""Issue 12, finding 4: one limit per action and caller, whichever door the action comes through.

Each test spends a budget through one door (the API) and finds it spent at the others (RPC,
the socket), as reported: "After the HTTP typing limit answers 429, POST
/rest/v1/rpc/update_typing_indicator keeps answering 200".
"""

from __future__ import annotations

from typing import Any

import aiohttp
import asyncpg

from realtime_messaging.protocol.frames import Vsn
from tests.conftest import RunningServer, Seed, running_server
from tests.server.wsclient import RawSocket

from .conftest import insert_message, insert_messages

LIMITS = {
    "rate_typing": "2/minute",
    "rate_presence": "2/minute",
    "rate_read_receipts": "2/minute",
    "rate_requests": "1000/minute",
}


async def _call(
    session: aiohttp.ClientSession, url: str, token: str, json: Any = None, method: str = "POST"
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with session.request(
        method, url, json=json, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        body = await response.json(content_type=None) if await response.read() else None
        return response.status, body, response


def _limited(status: int, body: Any, response: aiohttp.ClientResponse) -> None:
    assert status == 429, (status, body)
    if "/rest/v1/" in str(response.url):  # PostgREST's error shape (docs/rest.md)
        assert set(body) == {"code", "message", "details", "hint"}, body
        assert body["code"] == "rate_limited", body
    else:
        assert body["success"] is False and body["error"]["code"] == "rate_limited", body
    assert int(response.headers["Retry-After"]) >= 1


async def test_typing_presence_and_receipt_budgets_are_shared_by_api_rpc_and_socket(
    database_url: str, seed: Seed, pool: asyncpg.Pool
) -> None:
    async with running_server(database_url, **LIMITS) as srv, aiohttp.ClientSession() as session:
        customer, token = await seed.customer()
        conv = await seed.conversation(customer)
        staff, _ = await seed.staff()
        base = srv.http_url
        rpc = f"{base}/rest/v1/rpc"

        # Typing: two through the API, then RPC and the socket are refused too.
        for _ in range(2):
            status, body, _ = await _call(
                session, f"{base}/api/conversations/{conv}/typing", token, {"isTyping": True}
            )
            assert status == 200, body
        typing_args = {
            "conversation_id": str(conv),
            "customer_id": str(customer),
            "is_typing": True,
        }
        _limited(*await _call(session, f"{rpc}/update_typing_indicator", token, typing_args))
        sock = await RawSocket.connect(srv.ws_url, token, Vsn.V1)
        try:
            assert (await sock.join(f"conversation:{conv}"))["status"] == "ok"
            ref = sock.next_ref()
            await sock.send(
                f"realtime:conversation:{conv}",
                "broadcast",
                {"type": "broadcast", "event": "typing", "payload": {"isTyping": True}},
                ref,
                "1",
            )
            reply = await sock.reply_to(ref)
            assert reply["payload"]["status"] == "error", reply
            assert "typing limit" in reply["payload"]["response"]["reason"], reply
        finally:
            await sock.close()

        # Presence: two through RPC, then the API is refused.
        presence_args = {"customer_id": str(customer), "status": "online", "metadata": {}}
        for _ in range(2):
            status, body, _ = await _call(
                session, f"{rpc}/update_user_presence", token, presence_args
            )
            assert status == 200, body
        _limited(
            *await _call(session, f"{base}/api/presence", token, {"status": "online"}, method="PUT")
        )

        # Read receipts: two through RPC, then RPC and the API are refused.
        messages = [await insert_message(pool, conv, "staff", staff) for _ in range(4)]
        for message in messages[:2]:
            args = {"message_id": str(message), "customer_id": str(customer)}
            status, body, _ = await _call(session, f"{rpc}/mark_message_as_read", token, args)
            assert status == 200, body
        args = {"message_id": str(messages[2]), "customer_id": str(customer)}
        _limited(*await _call(session, f"{rpc}/mark_message_as_read", token, args))
        _limited(*await _call(session, f"{base}/api/messages/{messages[3]}/read", token))
        unread = await pool.fetchval(
            "SELECT count(*) FROM message_read_receipts WHERE read_by_customer_id = $1", customer
        )
        assert unread == 2


async def test_a_batch_of_read_receipts_is_one_request(
    database_url: str, seed: Seed, pool: asyncpg.Pool
) -> None:
    """The read-receipt limit counts requests: at 2 per minute, two batches of 300 messages are
    marked and the third request is refused (a batch, a single read or the RPC alike)."""
    async with running_server(database_url, **LIMITS) as srv, aiohttp.ClientSession() as session:
        customer, _ = await seed.customer()
        conv = await seed.conversation(customer)
        staff, token = await seed.staff()
        base = srv.http_url
        messages = await insert_messages(pool, conv, "customer", customer, 900)
        for batch in (messages[:300], messages[300:600]):
            ids = [str(m) for m in batch]
            status, body, _ = await _call(
                session, f"{base}/api/messages/read", token, {"messageIds": ids}
            )
            assert status == 200 and len(body["data"]["messageIds"]) == 300, body
        third = {"messageIds": [str(m) for m in messages[600:]]}
        _limited(*await _call(session, f"{base}/api/messages/read", token, third))
        _limited(*await _call(session, f"{base}/api/messages/{messages[600]}/read", token))
        args = {"message_id": str(messages[600]), "user_id": str(staff)}
        _limited(*await _call(session, f"{base}/rest/v1/rpc/mark_message_as_read", token, args))
        read = await pool.fetchval(
            "SELECT count(*) FROM message_read_receipts WHERE read_by_user_id = $1", staff
        )
        assert read == 600


async def test_the_service_role_spends_the_budget_of_the_participant_it_names(
    database_url: str, seed: Seed
) -> None:
    async with running_server(database_url, **LIMITS) as srv, aiohttp.ClientSession() as session:
        customer, token = await seed.customer()
        conv = await seed.conversation(customer)
        args = {"conversation_id": str(conv), "customer_id": str(customer), "is_typing": True}
        for _ in range(2):
            status, body, _ = await _call(
                session,
                f"{srv.http_url}/rest/v1/rpc/update_typing_indicator",
                srv.service_key,
                args,
            )
            assert status == 200, body
        _limited(
            *await _call(
                session,
                f"{srv.http_url}/api/conversations/{conv}/typing",
                token,
                {"isTyping": True},
            )
        )


async def test_rest_broadcast_counts_against_the_request_budget(
    database_url: str, seed: Seed
) -> None:
    """Reported: 700 REST broadcasts in 2.3 s with one portal token, no 429."""
    limits = {**LIMITS, "rate_requests": "6/minute"}
    async with running_server(database_url, **limits) as srv, aiohttp.ClientSession() as session:
        customer, token = await seed.customer()
        conv = await seed.conversation(customer)
        url = f"{srv.http_url}/realtime/v1/api/broadcast/conversation:{conv}/events/x"
        for _ in range(6):
            status, body, _ = await _call(session, url, token, {"n": 1})
            assert status == 202, body
        _limited(*await _call(session, url, token, {"n": 1}))
        batch = {"messages": [{"topic": f"conversation:{conv}", "event": "x", "payload": {}}]}
        _limited(*await _call(session, f"{srv.http_url}/realtime/v1/api/broadcast", token, batch))
        # The budget is the token's: another customer still sends.
        other, other_token = await seed.customer()
        other_conv = await seed.conversation(other)
        status, body, _ = await _call(
            session,
            f"{srv.http_url}/realtime/v1/api/broadcast/conversation:{other_conv}/events/x",
            other_token,
            {"n": 1},
        )
        assert status == 202, body


async def test_rpc_typing_cannot_last_an_hour(server: RunningServer, seed: Seed) -> None:
    """Reported: ``expires_in_seconds: 3600`` was accepted."""
    customer, token = await seed.customer()
    conv = await seed.conversation(customer)
    async with aiohttp.ClientSession() as session:
        # Refused: 400, as PostgREST answers (docs/rest.md).
        for seconds, expected in ((3600, 400), (31, 400), (0, 400), (30, 200)):
            args = {
                "conversation_id": str(conv),
                "customer_id": str(customer),
                "is_typing": True,
                "expires_in_seconds": seconds,
            }
            status, body, _ = await _call(
                session, f"{server.http_url}/rest/v1/rpc/update_typing_indicator", token, args
            )
            assert status == expected, (seconds, status, body)


async def test_unknown_conversation_is_not_a_budget(database_url: str, seed: Seed) -> None:
    """Spending is keyed by the caller, not by the ids it names: naming a stranger's ids
    through RPC never spends the stranger's budget."""
    async with running_server(database_url, **LIMITS) as srv, aiohttp.ClientSession() as session:
        victim, victim_token = await seed.customer()
        conv = await seed.conversation(victim)
        _, attacker_token = await seed.customer()
        args = {"conversation_id": str(conv), "customer_id": str(victim), "is_typing": True}
        for _ in range(3):
            status, _, _ = await _call(
                session, f"{srv.http_url}/rest/v1/rpc/update_typing_indicator", attacker_token, args
            )
            assert status in (403, 404, 429), status
        status, body, _ = await _call(
            session,
            f"{srv.http_url}/api/conversations/{conv}/typing",
            victim_token,
            {"isTyping": True},
        )
        assert status == 200, body
