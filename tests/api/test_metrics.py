"""/metrics exposes the monitoring list of the original design, and the numbers move."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import asyncpg

from tests.conftest import Seed, running_server
from tests.feed.conftest import is_change, subscribe
from tests.server.wsclient import RawSocket


async def _metrics(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with session.get(base + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if match:
            values[match[1]] = float(match[2])
    return values


async def test_metrics_follow_connections_deliveries_changes_and_errors(
    database_url: str, seed: Seed, pool: asyncpg.Pool
) -> None:
    async with running_server(database_url) as srv, aiohttp.ClientSession() as session:
        before = await _metrics(session, srv.http_url)
        assert before["rtm_active_connections"] == 0
        _, staff_token = await seed.staff()
        customer, _ = await seed.customer()
        conv = await seed.conversation(customer)
        binding = {
            "event": "INSERT",
            "schema": "public",
            "table": "customer_messages",
            "filter": f"conversation_id=eq.{conv}",
        }
        sock, _ = await subscribe(srv.ws_url, staff_token, "metrics-room", [binding])
        other = await RawSocket.connect(srv.ws_url, srv.anon_key)
        try:
            await other.join("metrics-room", {"broadcast": {"self": True}})
            await other.send(
                "realtime:metrics-room",
                "broadcast",
                {"type": "broadcast", "event": "e", "payload": {}},
                None,
                "1",
            )
            await other.expect(lambda m: m.get("event") == "broadcast")
            await pool.execute(
                "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) VALUES ($1, 'customer', $2, 'x')",
                conv,
                customer,
            )
            await sock.expect(is_change("customer_messages"))
            async with session.get(srv.http_url + "/api/conversations") as response:
                assert response.status == 401
            after = await _metrics(session, srv.http_url)
            assert after["rtm_active_connections"] == 2
            assert after["rtm_active_channels"] == 2
            assert after['rtm_deliveries_total{kind="broadcast"}'] >= 1
            assert after['rtm_deliveries_total{kind="postgres_changes"}'] >= 1
            assert after['rtm_changes_total{table="customer_messages"}'] >= 1
            assert after["rtm_change_delivery_seconds_count"] >= 1
            assert after['rtm_http_errors_total{status="401"}'] >= 1
            assert after["rtm_change_feed_up"] == 1
            assert any(k.startswith("rtm_http_request_duration_seconds_count{") for k in after)
        finally:
            await sock.close()
            await other.close()
        async with asyncio.timeout(5):
            while (await _metrics(session, srv.http_url))["rtm_active_connections"] != 0:
                await asyncio.sleep(0.05)
