"""Issue 12, finding 3: postgres_changes bindings are bounded per join and per socket.

Reported: one customer socket, 10 channels of 12,000 distinct bindings each (``content=neq.<i>``,
a join frame of 891 kB), stalled the server for 6 s after one message.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import asyncpg

from realtime_messaging.domain.bounds import InputLimits
from tests.conftest import RunningServer, Seed, running_server

from .wsclient import RawSocket


def _bindings(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "event": "*",
            "schema": "public",
            "table": "customer_messages",
            "filter": f"content=neq.{i}",
        }
        for i in range(start, start + n)
    ]


async def test_a_join_with_twelve_thousand_bindings_is_refused(
    server: RunningServer, seed: Seed
) -> None:
    customer, token = await seed.customer()
    sock = await RawSocket.connect(server.ws_url, token)
    try:
        # As reported: a join frame under the 1 MB frame limit (the schema defaults to public).
        bindings = [
            {"event": "*", "table": "customer_messages", "filter": f"content=neq.{i}"}
            for i in range(12_000)
        ]
        reply = await sock.join(f"customer:{customer}:messages", {"postgres_changes": bindings})
        assert reply == {
            "status": "error",
            "response": {
                "reason": "TooManyBindings: at most 100 postgres_changes bindings per join"
            },
        }
        # The socket stays usable.
        assert (await sock.join(f"customer:{customer}:messages"))["status"] == "ok"
    finally:
        await sock.close()


async def test_bindings_are_bounded_across_a_socket_and_the_bound_works(
    database_url: str, seed: Seed, pool: asyncpg.Pool
) -> None:
    limits = InputLimits(max_bindings_per_join=10, max_bindings_per_socket=25)
    async with running_server(database_url, input_limits=limits) as srv:
        customer, token = await seed.customer()
        conversation = await seed.conversation(customer)
        sock = await RawSocket.connect(srv.ws_url, token)
        try:
            assert (await sock.join("a", {"postgres_changes": _bindings(10)}))["status"] == "ok"
            assert (await sock.join("b", {"postgres_changes": _bindings(10, 10)}))["status"] == "ok"
            over = await sock.join("c", {"postgres_changes": _bindings(6, 20)})
            assert over["response"]["reason"] == (
                "TooManyBindings: at most 25 postgres_changes bindings per socket"
            ), over
            # Rejoining a topic replaces its bindings rather than adding to them.
            assert (await sock.join("b", {"postgres_changes": _bindings(10, 10)}))["status"] == "ok"
            assert (await sock.join("c", {"postgres_changes": _bindings(5, 20)}))["status"] == "ok"
            # Every binding that matches a change is named in its one frame.
            await sock.expect(lambda m: m.get("event") == "system")
            await pool.execute(
                "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
                "VALUES ($1, 'customer', $2, 'hello')",
                conversation,
                customer,
            )
            change = await sock.expect(
                lambda m: m.get("event") == "postgres_changes" and m["topic"] == "realtime:a"
            )
            assert len(change["payload"]["ids"]) == 10
        finally:
            await sock.close()


async def test_a_filter_longer_than_the_limit_is_refused(server: RunningServer, seed: Seed) -> None:
    customer, token = await seed.customer()
    sock = await RawSocket.connect(server.ws_url, token)
    try:
        long_filter = "content=in.(" + ",".join(str(i) for i in range(400)) + ")"
        binding = {"event": "*", "schema": "public", "table": "customer_messages"}
        reply = await sock.join(
            f"customer:{customer}:messages",
            {"postgres_changes": [{**binding, "filter": long_filter}]},
        )
        assert reply["status"] == "error"
        assert reply["response"]["reason"] == (
            "InvalidJoinPayload: a postgres_changes filter is longer than 1000 characters"
        )
    finally:
        await sock.close()


async def test_health_answers_while_a_customer_holds_the_most_bindings(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    """The reported stall, at the limits: a message in the customer's conversation is matched
    against every binding the socket may hold, and the server answers the next request."""
    customer, token = await seed.customer()
    conversation = await seed.conversation(customer)
    sock = await RawSocket.connect(server.ws_url, token)
    try:
        for n in range(5):
            reply = await sock.join(
                f"binding-limit-{customer}-{n}", {"postgres_changes": _bindings(100, 100 * n)}
            )
            assert reply["status"] == "ok", reply
        await pool.execute(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
            "VALUES ($1, 'customer', $2, 'x')",
            conversation,
            customer,
        )
        for _ in range(5):
            change = await sock.expect(lambda m: m.get("event") == "postgres_changes")
            assert len(change["payload"]["ids"]) == 100
        async with aiohttp.ClientSession() as http:
            async with http.get(server.http_url + "/healthz") as response:
                assert response.status == 200
    finally:
        await sock.close()
