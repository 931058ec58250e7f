"""Token lifetime on a channel: a refresh that carries no token of ours changes nothing."""

from __future__ import annotations

import pytest

from tests.conftest import RunningServer, Seed

from ..wsclient import RawSocket


@pytest.mark.parametrize("token", ["sb_publishable_abc", "", None])
async def test_a_refresh_without_a_token_of_ours_is_ignored(
    server: RunningServer, seed: Seed, token: str | None
) -> None:
    _, staff_token = await seed.staff()
    sock = await RawSocket.connect(server.ws_url, staff_token)
    try:
        await sock.join("refresh-ignored", {"broadcast": {"self": True, "ack": True}})
        await sock.send(
            "realtime:refresh-ignored", "access_token", {"access_token": token}, "2", "1"
        )
        await sock.send(
            "realtime:refresh-ignored",
            "broadcast",
            {"type": "broadcast", "event": "still", "payload": {}},
            "3",
            "1",
        )
        # No reply to the refresh, no system error or phx_close: the next frames are the
        # broadcast's own.
        first = await sock.recv()
        second = await sock.recv()
        assert {first["event"], second["event"]} == {"phx_reply", "broadcast"}
        reply = first if first["event"] == "phx_reply" else second
        assert reply["ref"] == "3" and reply["payload"]["status"] == "ok"
    finally:
        await sock.close()


async def test_a_refresh_to_a_shorter_token_closes_the_channel_at_its_expiry(
    server: RunningServer, seed: Seed
) -> None:
    staff, staff_token = await seed.staff()
    sock = await RawSocket.connect(server.ws_url, staff_token)
    try:
        await sock.join("refresh-shorter")
        await sock.send(
            "realtime:refresh-shorter",
            "access_token",
            {"access_token": seed.staff_token(staff, ttl_seconds=1)},
            "2",
            "1",
        )
        # The channel now lives by the new token: its expiry closes the channel, not the socket.
        system = await sock.expect(lambda m: m.get("event") == "system")
        assert system["payload"]["status"] == "error"
        assert system["payload"]["message"].startswith("Token has expired")
        assert (await sock.recv())["event"] == "phx_close"
        await sock.send("phoenix", "heartbeat", {}, "3")
        assert (await sock.reply_to("3"))["payload"]["status"] == "ok"
    finally:
        await sock.close()


async def test_channels_sharing_a_token_expire_together_unless_they_left(
    server: RunningServer, seed: Seed
) -> None:
    """Channels whose tokens expire at the same second share one timer: the one that left
    first (the first to arm it) does not take the others' expiry with it."""
    staff, _ = await seed.staff()
    token = seed.staff_token(staff, ttl_seconds=2)
    sockets = [await RawSocket.connect(server.ws_url, token) for _ in range(3)]
    try:
        for sock in sockets:
            assert (await sock.join("expire-together"))["status"] == "ok"
        await sockets[0].send("realtime:expire-together", "phx_leave", {}, "2", "1")
        assert (await sockets[0].recv())["event"] == "phx_reply"
        for sock in sockets[1:]:
            system = await sock.expect(lambda m: m.get("event") == "system", timeout=10)
            assert system["payload"]["message"].startswith("Token has expired")
            assert (await sock.recv())["event"] == "phx_close"
    finally:
        for sock in sockets:
            await sock.close()
