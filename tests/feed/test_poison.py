"""Issue 12, finding 2: a change the feed cannot encode never stops it or skips a neighbour.

The API refuses JSON nested past its limit, but plain SQL can still write such a row. Written
in the middle of a burst of messages, it is delivered degraded (only its small values, with
``errors`` saying so, as Supabase Realtime does for records too large to send), and every
message around it reaches the subscriber live.
"""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg

from tests.conftest import RunningServer, Seed
from tests.server.wsclient import RawSocket

from .conftest import is_change, subscribe

#: Deeper than the JSON encoder goes (orjson: 254), shallower than its decoder (1,024).
UNENCODABLE = 260
#: Deeper than the JSON decoder goes: the feed cannot even read the record back.
UNDECODABLE = 1100


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


async def test_a_poison_change_in_a_burst_leaves_every_other_change_delivered(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, _ = await seed.customer()
    conversation = await seed.conversation(customer)
    _, staff_token = await seed.staff()
    poisoners = {depth: (await seed.staff())[0] for depth in (UNENCODABLE, UNDECODABLE)}
    sock, _ = await subscribe(
        server.ws_url,
        staff_token,
        "feed-poison",
        [
            {"event": "INSERT", "schema": "public", "table": "customer_messages"},
            {"event": "*", "schema": "public", "table": "user_presence"},
        ],
    )

    async def send(i: int) -> None:
        await pool.execute(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
            "VALUES ($1, 'customer', $2, $3)",
            conversation,
            customer,
            f"burst {i}",
        )

    async def poison(depth: int) -> None:
        await pool.execute(
            "INSERT INTO user_presence (user_id, status, metadata) VALUES ($1, 'online', $2::jsonb)",
            poisoners[depth],
            _nested(depth),
        )

    try:
        await asyncio.gather(
            *(send(i) for i in range(20)),
            poison(UNENCODABLE),
            poison(UNDECODABLE),
            *(send(i) for i in range(20, 40)),
        )
        contents: set[str] = set()
        presence: list[dict[str, object]] = []
        while len(contents) < 40 or len(presence) < 2:
            data = (await sock.expect(is_change(), timeout=10))["payload"]["data"]
            if data["table"] == "customer_messages":
                contents.add(data["record"]["content"])
            elif (
                data["record"].get("user_id") in {str(p) for p in poisoners.values()}
                or not (data["record"])
            ):
                presence.append(data)
        assert contents == {f"burst {i}" for i in range(40)}
        for data in presence:
            assert data["errors"] == ["Error 413: Payload Too Large"], data
            assert "metadata" not in data["record"], data
        # The row the decoder could read keeps its small values; the other arrives empty.
        kept = [d["record"] for d in presence if d["record"]]
        assert [r["user_id"] for r in kept] == [str(poisoners[UNENCODABLE])], presence
        assert kept[0]["status"] == "online"

        # The feed is still live: a later change arrives, the server says it is ready, and
        # the metrics count the degraded changes.
        await send(40)
        data = (await sock.expect(is_change("customer_messages"), timeout=10))["payload"]["data"]
        assert data["record"]["content"] == "burst 40"
        async with aiohttp.ClientSession() as http:
            async with http.get(server.http_url + "/readyz") as response:
                assert response.status == 200
            async with http.get(server.http_url + "/metrics") as response:
                metrics = await response.text()
        degraded = next(
            line for line in metrics.splitlines() if line.startswith("rtm_changes_degraded_total")
        )
        assert float(degraded.split()[-1]) >= 2
    finally:
        await sock.close()


async def test_a_poison_change_replays_degraded_to_a_resuming_subscriber(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    """The same change read back from the log for a client that resumes."""
    _, staff_token = await seed.staff()
    poisoner = (await seed.staff())[0]
    binding = [{"event": "*", "schema": "public", "table": "user_presence"}]
    sock, _ = await subscribe(server.ws_url, staff_token, "feed-poison-resume", binding)
    try:
        system = await _position(pool)
        await pool.execute(
            "INSERT INTO user_presence (user_id, status, metadata) VALUES ($1, 'away', $2::jsonb)",
            poisoner,
            _nested(UNENCODABLE),
        )
        live = await sock.expect(
            lambda m: (
                is_change("user_presence")(m)
                and m["payload"]["data"]["record"].get("user_id") == str(poisoner)
            )
        )
        assert live["payload"]["data"]["errors"] == ["Error 413: Payload Too Large"]
    finally:
        await sock.close()
    again = await RawSocket.connect(server.ws_url, staff_token)
    try:
        config = {"postgres_changes": binding, "resume": {"position": system}}
        assert (await again.join("feed-poison-resume", config))["status"] == "ok"
        replayed = []
        while not replayed or replayed[-1].get("event") != "system":
            replayed.append(await again.recv())
        mine = [
            m["payload"]["data"]
            for m in replayed
            if is_change("user_presence")(m)
            and m["payload"]["data"]["record"].get("user_id") == str(poisoner)
        ]
        assert len(mine) == 1, replayed
        assert mine[0]["errors"] == ["Error 413: Payload Too Large"]
        assert mine[0]["record"]["status"] == "away"
    finally:
        await again.close()


async def _position(pool: asyncpg.Pool) -> int:
    position: int = await pool.fetchval("SELECT last_pos FROM rtm.change_feed_state")
    return position
