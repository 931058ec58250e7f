"""Broadcast between server processes through Redis: what one process's clients publish reaches
the other processes' clients exactly once, in the publisher's order, in every wire format, and a
process receives only the topics it has subscribers of."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from realtime_messaging.protocol.frames import (
    Vsn,
    encode_user_broadcast,
    encode_user_broadcast_push,
)
from tests.compat.clients import PAYLOAD, JsClient, PyClient
from tests.server.wsclient import RawSocket

from .conftest import WAIT, RedisServer, eventually, metric, servers, sockets


def _push(n: Any, event: str = "n") -> dict[str, Any]:
    return {"type": "broadcast", "event": event, "payload": {"n": n}}


async def _until(sock: RawSocket, event: str) -> list[tuple[str, Any]]:
    """Every broadcast ``(event, n)`` the socket receives, up to and including ``event``."""
    seen: list[tuple[str, Any]] = []
    while True:
        msg = await sock.expect(lambda m: m.get("event") == "broadcast", WAIT)
        body = msg["payload"]
        seen.append((body["event"], body["payload"]["n"]))
        if body["event"] == event:
            return seen


async def test_json_broadcast_reaches_the_other_process_once_and_in_order(
    redis_server: RedisServer, database_url: str
) -> None:
    async with servers(database_url, redis_server.url, 2) as (a, b), sockets() as open_socket:
        sender = await open_socket(a)  # vsn 1.0.0
        local = await open_socket(a, Vsn.V2)
        remote = await open_socket(b)
        remote_v2 = await open_socket(b, Vsn.V2)
        topic = "realtime:scale-order"
        await sender.join("scale-order", {"broadcast": {"self": False}})
        for sock in (local, remote, remote_v2):
            await sock.join("scale-order")

        for n in range(1, 51):
            await sender.send(topic, "broadcast", _push(n), None, "1")
        await sender.send(topic, "broadcast", _push(0, "end"), None, "1")
        expected = [("n", n) for n in range(1, 51)] + [("end", 0)]
        assert await _until(remote, "end") == expected
        assert await _until(remote_v2, "end") == expected
        # The answer from B went out after B saw everything from A: an echo of A's own
        # publications delivered a second time on A would arrive before it.
        await remote.send(topic, "broadcast", _push(0, "back"), None, "1")
        assert await _until(local, "back") == [*expected, ("back", 0)]
        # self: false holds across processes: the sender gets only B's answer.
        assert await _until(sender, "back") == [("back", 0)]


async def test_binary_broadcasts_cross_processes_in_every_format(
    redis_server: RedisServer, database_url: str
) -> None:
    async with servers(database_url, redis_server.url, 2) as (a, b), sockets() as open_socket:
        sender = await open_socket(a, Vsn.V2)
        v2 = await open_socket(b, Vsn.V2)
        v1 = await open_socket(b)
        topic = "realtime:scale-binary"
        for sock in (sender, v2, v1):
            await sock.join("scale-binary", {"broadcast": {"ack": True}})

        json_bytes = orjson.dumps({"x": 1, "s": "héllo"})
        await sender.send_raw(encode_user_broadcast_push("1", "7", topic, "cursor", json_bytes))
        assert (await sender.reply_to("7"))["payload"]["status"] == "ok"
        raw = bytes(range(256))
        await sender.send_raw(
            encode_user_broadcast_push("1", "8", topic, "blob", raw, json_encoded=False)
        )
        assert (await sender.reply_to("8"))["payload"]["status"] == "ok"
        await sender.send(topic, "broadcast", _push(1, "after"), "9", "1")

        # vsn 2.0.0 on the other process: kind-4 frames carrying the exact bytes.
        got = [(await v2.expect(lambda m: "binary" in m))["binary"] for _ in range(2)]
        assert got == [
            encode_user_broadcast(topic, "cursor", json_bytes, json_encoded=True),
            encode_user_broadcast(topic, "blob", raw, json_encoded=False),
        ]
        # vsn 1.0.0: the JSON one as a JSON broadcast, the raw bytes not at all.
        first = await v1.expect(lambda m: m.get("event") == "broadcast")
        assert first["payload"] == {
            "type": "broadcast",
            "event": "cursor",
            "payload": {"x": 1, "s": "héllo"},
        }
        second = await v1.expect(lambda m: m.get("event") == "broadcast")
        assert second["payload"]["event"] == "after"


async def test_rest_broadcasts_keep_their_meta_across_processes(
    redis_server: RedisServer, database_url: str
) -> None:
    async with (
        servers(database_url, redis_server.url, 2) as (a, b),
        sockets() as open_socket,
        aiohttp.ClientSession() as http,
    ):
        v2 = await open_socket(b, Vsn.V2)
        v1 = await open_socket(b)
        for sock in (v2, v1):
            await sock.join("scale-rest")
        headers = {"Authorization": f"Bearer {a.service_key}"}
        url = a.http_url + "/realtime/v1/api/broadcast/scale-rest/events/raw"
        async with http.post(
            url,
            data=b"\x00\xff",
            headers={**headers, "Content-Type": "application/octet-stream"},
        ) as response:
            assert response.status == 202
        body = {"messages": [{"topic": "scale-rest", "event": "json", "payload": {"k": "v"}}]}
        async with http.post(
            a.http_url + "/realtime/v1/api/broadcast", json=body, headers=headers
        ) as response:
            assert response.status == 202

        frame = (await v2.expect(lambda m: "binary" in m))["binary"]
        meta_len = frame[3]
        meta = orjson.loads(frame[5 + len("realtime:scale-rest") + len("raw") :][:meta_len])
        assert set(meta) == {"id"}
        assert frame == encode_user_broadcast(
            "realtime:scale-rest", "raw", b"\x00\xff", json_encoded=False, metadata=meta
        )
        for sock in (v2, v1):
            json_msg = await sock.expect(lambda m: m.get("event") == "broadcast")
            assert json_msg["payload"]["payload"] == {"k": "v"}
            assert set(json_msg["payload"]["meta"]) == {"id"}


async def test_official_clients_on_two_processes_talk_both_ways(
    redis_server: RedisServer, database_url: str
) -> None:
    """realtime-js (vsn 2.0.0: binary kind-3 pushes) on one process, realtime-py on another."""
    async with servers(database_url, redis_server.url, 2) as (a, b):
        js = await JsClient.start(a.realtime_url, a.anon_key, name="js@A")
        py = PyClient(b.realtime_url, b.anon_key, name="py@B")
        try:
            js.join("room", "scale-official", config={"broadcast": {"ack": True}}, broadcast=("*",))
            await js.log.expect(ev="status", channel="room", status="SUBSCRIBED")
            await py.join(
                "room", "scale-official", config={"broadcast": {"ack": True}}, broadcast=("*",)
            )
            await py.log.expect(ev="status", channel="room", status="SUBSCRIBED")

            assert await js.call("send", channel="room", event="from-js", payload=PAYLOAD) == "ok"
            got = await py.log.expect(ev="broadcast", channel="room", event="from-js")
            assert got["payload"] == PAYLOAD
            assert await py.send("room", "from-py", {"n": 2}) == "ok"
            got = await js.log.expect(ev="broadcast", channel="room", event="from-py")
            assert got["payload"] == {"n": 2}
            # Nothing twice, and neither sender heard itself (self: false, both defaults).
            assert len(py.log.find(ev="broadcast", event="from-js")) == 1
            assert js.log.find(ev="broadcast", event="from-js") == []
            assert py.log.find(ev="broadcast", event="from-py") == []
        finally:
            await js.close()
            await py.client.close()


async def test_a_process_receives_only_the_topics_it_has_subscribers_of(
    redis_server: RedisServer, database_url: str
) -> None:
    async with (
        servers(database_url, redis_server.url, 3) as (a, b, c),
        sockets() as open_socket,
        aiohttp.ClientSession() as http,
    ):
        channel = "rtm:t:realtime:scale-only"
        sender = await open_socket(a)
        member = await open_socket(b)
        await sender.join("scale-only")
        await member.join("scale-only")
        # A join answers only once Redis confirmed the subscription: no wait needed here.
        assert await redis_server.numsub(channel) == 2
        topics = await redis_server.command("PUBSUB", "CHANNELS", "rtm:t:*")
        assert topics == [channel.encode()]

        received = 'rtm_broker_envelopes_total{outcome="received"}'
        before = {s: await metric(http, s, received) for s in (a, b, c)}
        stats_before = await redis_server.commandstats()
        for n in range(100):
            await sender.send("realtime:scale-only", "broadcast", _push(n), None, "1")
        await _until_n(member, 99)
        stats_after = await redis_server.commandstats()
        # C never subscribed, so Redis sent it nothing; B got all of it, A none of its own
        # (Redis echoes them to A, which skips them).
        assert await metric(http, c, received) == before[c]
        assert await metric(http, b, received) == before[b] + 100
        assert await metric(http, a, received) == before[a]
        # One PUBLISH per message, nothing else (but the measuring connection's own commands).
        delta = {k: v - stats_before.get(k, 0) for k, v in stats_after.items()}
        assert delta.pop("publish") == 100
        measuring = {"info", "hello", "client|setinfo", "client|setname"}
        assert {k: v for k, v in delta.items() if v and k not in measuring} == {}

        # The last member leaving unsubscribes its process (after a short linger).
        await member.send("realtime:scale-only", "phx_leave", {}, "2", "1")
        await member.reply_to("2")

        async def one_left() -> bool:
            return await redis_server.numsub(channel) == 1

        assert await eventually(one_left) < 3.0


async def _until_n(sock: RawSocket, last: int) -> None:
    while True:
        msg = await sock.expect(lambda m: m.get("event") == "broadcast", WAIT)
        if msg["payload"]["payload"]["n"] == last:
            return


async def test_presence_stays_correct_on_one_process_with_the_redis_broker(
    redis_server: RedisServer, database_url: str
) -> None:
    """A process's own presence diffs reach its local members once, not a second time
    through Redis."""
    async with servers(database_url, redis_server.url, 2) as (a, _b), sockets() as open_socket:
        alice = await open_socket(a)
        bob = await open_socket(a, Vsn.V2)
        await alice.join("scale-presence", {"presence": {"key": "alice", "enabled": True}})
        await bob.join("scale-presence", {"presence": {"key": "bob", "enabled": True}})
        topic = "realtime:scale-presence"
        await alice.send(topic, "presence", {"event": "track", "payload": {"n": 1}}, "3", "1")
        await alice.reply_to("3")
        diff = (await bob.expect(lambda m: m.get("event") == "presence_diff"))["payload"]
        assert list(diff["joins"]) == ["alice"]
        await alice.send(topic, "presence", {"event": "untrack"}, "4", "1")
        diff = (await bob.expect(lambda m: m.get("event") == "presence_diff"))["payload"]
        # The next diff is the untrack: the join did not come twice.
        assert diff["joins"] == {} and list(diff["leaves"]) == ["alice"]


async def test_rediss_urls_carry_broadcasts_over_tls(
    tls_redis_server: RedisServer, database_url: str
) -> None:
    """``rediss://`` with a verified certificate: the broker and the rate limits both use it."""
    async with (
        servers(database_url, tls_redis_server.url, 2) as (a, b),
        sockets() as open_socket,
        aiohttp.ClientSession() as http,
    ):
        sender, receiver = await open_socket(a), await open_socket(b)
        await sender.join("scale-tls")
        await receiver.join("scale-tls")
        await sender.send("realtime:scale-tls", "broadcast", _push(7), None, "1")
        await _until_n(receiver, 7)
        assert await metric(http, a, "rtm_broker_up") == 1.0
        # A REST broadcast spends the token's request budget: counted in Redis, over TLS.
        body = {"messages": [{"topic": "scale-tls", "event": "e", "payload": {}}]}
        async with http.post(
            b.http_url + "/realtime/v1/api/broadcast",
            json=body,
            headers={"Authorization": f"Bearer {b.service_key}"},
        ) as response:
            assert response.status == 202
        assert await tls_redis_server.command("KEYS", "rtm:limits*")
