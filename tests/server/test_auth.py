"""Tokens and topic rules at connect, at join, on refresh, and when tokens expire or are revoked."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from realtime_messaging.protocol.frames import Vsn
from realtime_messaging.server.auth import Authenticator
from realtime_messaging.tokens import hash_portal_token
from tests.conftest import RunningServer, Seed, running_server

from .wsclient import RawSocket


def _unauthorized(topic: str) -> dict[str, object]:
    return {
        "status": "error",
        "response": {
            "reason": f"Unauthorized: You do not have permissions to read from this Channel topic: {topic}"
        },
    }


async def test_portal_token_is_accepted_as_apikey_and_access_token(
    server: RunningServer, seed: Seed
) -> None:
    customer, token = await seed.customer()
    conversation = await seed.conversation(customer)
    sock = await RawSocket.connect(server.ws_url, token)
    try:
        assert (await sock.join(f"conversation:{conversation}"))["status"] == "ok"
        assert (await sock.join(f"customer:{customer}:messages"))["status"] == "ok"
    finally:
        await sock.close()
    anon = await RawSocket.connect(server.ws_url, server.anon_key, Vsn.V2)
    try:
        assert (await anon.join(f"presence:{conversation}", access_token=token))["status"] == "ok"
    finally:
        await anon.close()


async def test_customer_never_joins_another_customers_topics(
    server: RunningServer, seed: Seed
) -> None:
    a, token_a = await seed.customer()
    b, _ = await seed.customer()
    conv_b = await seed.conversation(b)
    staff, _ = await seed.staff()
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        for topic in (
            f"customer:{b}:messages",
            f"conversation:{conv_b}",
            f"presence:{conv_b}",
            f"staff:{staff}:messages",
            f"conversation:{uuid.uuid4()}",
            "conversation:not-a-uuid",
            f"customer:{a}:messages:extra",
        ):
            assert await sock.join(topic, access_token=token_a) == _unauthorized(topic), topic
    finally:
        await sock.close()


async def test_anon_may_join_public_topics_only(server: RunningServer, seed: Seed) -> None:
    customer, _ = await seed.customer()
    conversation = await seed.conversation(customer)
    staff, _ = await seed.staff()
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        assert (await sock.join("lobby"))["status"] == "ok"
        for topic in (
            f"conversation:{conversation}",
            f"presence:{conversation}",
            f"customer:{customer}:messages",
            f"staff:{staff}:messages",
        ):
            assert await sock.join(topic) == _unauthorized(topic)
    finally:
        await sock.close()


async def test_staff_joins_every_conversation_but_only_their_own_staff_topic(
    server: RunningServer, seed: Seed
) -> None:
    customer, _ = await seed.customer()
    conversation = await seed.conversation(customer)
    me, my_token = await seed.staff()
    other, _ = await seed.staff()
    sock = await RawSocket.connect(server.ws_url, my_token)
    try:
        for topic in (
            f"conversation:{conversation}",
            f"presence:{conversation}",
            f"customer:{customer}:messages",
            f"staff:{me}:messages",
        ):
            assert (await sock.join(topic))["status"] == "ok", topic
        assert await sock.join(f"staff:{other}:messages") == _unauthorized(
            f"staff:{other}:messages"
        )
    finally:
        await sock.close()


async def test_service_role_joins_everything(server: RunningServer, seed: Seed) -> None:
    customer, _ = await seed.customer()
    conversation = await seed.conversation(customer)
    staff, _ = await seed.staff()
    sock = await RawSocket.connect(server.ws_url, server.service_key)
    try:
        for topic in (
            f"conversation:{conversation}",
            f"staff:{staff}:messages",
            f"customer:{customer}:messages",
        ):
            assert (await sock.join(topic))["status"] == "ok"
    finally:
        await sock.close()


async def test_revoked_and_expired_portal_tokens_are_refused_at_connect(
    server: RunningServer, seed: Seed
) -> None:
    customer, token = await seed.customer()
    await seed.revoke(token)
    expired = await seed.portal_token(customer, ttl_seconds=-10)
    for bad, message in ((token, "Token has been revoked"), (expired, "Token has expired")):
        sock = None
        with pytest.raises(Exception) as info:
            sock = await RawSocket.connect(server.ws_url, bad)
        assert "401" in str(info.value), message
        assert sock is None


def _system_then_close(topic: str, message_start: str):  # type: ignore[no-untyped-def]
    async def check(sock: RawSocket) -> None:
        system = await sock.expect(lambda m: m.get("event") == "system", timeout=6)
        assert system["payload"]["status"] == "error"
        assert system["payload"]["extension"] == "system"
        assert system["payload"]["channel"] == topic
        assert system["payload"]["message"].startswith(message_start), system
        close = await sock.recv()
        assert close["event"] == "phx_close" and close["topic"] == f"realtime:{topic}"

    return check


async def test_staff_token_expiring_mid_connection_closes_the_channel(
    server: RunningServer, seed: Seed
) -> None:
    staff, _ = await seed.staff()
    short = seed.staff_token(staff, ttl_seconds=1)
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        assert (await sock.join("expiring", access_token=short))["status"] == "ok"
        started = asyncio.get_running_loop().time()
        await _system_then_close("expiring", "Token has expired")(sock)
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        await sock.close()


async def test_revoking_a_portal_token_closes_its_channels_within_seconds(
    server: RunningServer, seed: Seed
) -> None:
    customer, token = await seed.customer()
    conversation = await seed.conversation(customer)
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        assert (await sock.join(f"conversation:{conversation}", access_token=token))[
            "status"
        ] == "ok"
        await seed.revoke(token)
        started = asyncio.get_running_loop().time()
        await _system_then_close(f"conversation:{conversation}", "Token has been revoked")(sock)
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        await sock.close()


async def test_a_deleted_portal_token_closes_its_channels_too(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    """Tokens can vanish without a revocation (their customer deleted): the periodic full
    check catches them (every 15 rounds of 0.2 s here)."""
    customer, token = await seed.customer()
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        assert (await sock.join("lobby", access_token=token))["status"] == "ok"
        await pool.execute(
            "DELETE FROM portal_tokens WHERE token_hash = $1", hash_portal_token(token)
        )
        await _system_then_close("lobby", "Token has been revoked")(sock)
    finally:
        await sock.close()


async def test_revoking_the_connect_token_closes_the_socket(
    server: RunningServer, seed: Seed
) -> None:
    customer, token = await seed.customer()
    conversation = await seed.conversation(customer)
    sock = await RawSocket.connect(server.ws_url, token)
    try:
        assert (await sock.join(f"conversation:{conversation}"))["status"] == "ok"
        await seed.revoke(token)
        await _system_then_close(f"conversation:{conversation}", "Token has been revoked")(sock)
        assert await sock.closed() == 1008
    finally:
        await sock.close()


async def test_access_token_refresh_keeps_the_channel_without_a_reply(
    server: RunningServer, seed: Seed
) -> None:
    staff, _ = await seed.staff()
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        assert (
            await sock.join(
                "refresh", {"broadcast": {"self": True}}, access_token=seed.staff_token(staff, 2)
            )
        )["status"] == "ok"
        await sock.send(
            "realtime:refresh",
            "access_token",
            {"access_token": seed.staff_token(staff, 3600)},
            "7",
            "1",
        )
        # Past the first token's expiry, the channel still works. Its exp is whole seconds, so
        # it lies between 1 and 2 s after minting: a 1 s token could expire while the refresh
        # was being checked on a slow machine, before the new token replaced it.
        await asyncio.sleep(0)  # let the refresh be read before the clock check below starts
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3.0
        while loop.time() < deadline:
            await sock.send("phoenix", "heartbeat", {}, "hb")
            msg = await sock.recv()
            assert msg["event"] == "phx_reply" and msg["ref"] == "hb", (
                msg
            )  # no reply to the refresh, no close
            await asyncio.sleep(0.25)
        await sock.send(
            "realtime:refresh",
            "broadcast",
            {"type": "broadcast", "event": "e", "payload": {}},
            None,
            "1",
        )
        assert (await sock.recv())["event"] == "broadcast"
    finally:
        await sock.close()


async def test_refresh_with_a_bad_token_closes_the_channel(
    server: RunningServer, seed: Seed
) -> None:
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        await sock.join("refresh-bad")
        await sock.send(
            "realtime:refresh-bad", "access_token", {"access_token": "garbage"}, "2", "1"
        )
        await _system_then_close("refresh-bad", "The token provided is not a valid JWT")(sock)
    finally:
        await sock.close()


async def test_refresh_to_another_customer_loses_the_topic(
    server: RunningServer, seed: Seed
) -> None:
    a, token_a = await seed.customer()
    _, token_b = await seed.customer()
    conversation = await seed.conversation(a)
    sock = await RawSocket.connect(server.ws_url, server.anon_key)
    try:
        await sock.join(f"conversation:{conversation}", access_token=token_a)
        await sock.send(
            f"realtime:conversation:{conversation}",
            "access_token",
            {"access_token": token_b},
            "2",
            "1",
        )
        await _system_then_close(f"conversation:{conversation}", "You no longer have permission")(
            sock
        )
    finally:
        await sock.close()


async def test_staff_connecting_together_while_the_pool_opens_connections(
    database_url: str, seed: Seed
) -> None:
    """Staff sockets connecting and joining together, on a fresh server whose database pool
    has one connection open: checking that each is staff makes the pool open more, under
    asyncpg's ``asyncio.timeout``, which needs a task. Upgrades and joins run without one until
    they first wait (server/eager.py), and these were refused at first."""
    staff = [await seed.staff() for _ in range(6)]
    async with running_server(database_url) as srv:
        sockets = await asyncio.gather(
            *(RawSocket.connect(srv.ws_url, token) for _, token in staff)
        )
        try:
            replies = await asyncio.gather(
                *(
                    sock.join(f"staff:{user}:messages", access_token=token)
                    for sock, (user, token) in zip(sockets, staff, strict=True)
                )
            )
            assert [reply["status"] for reply in replies] == ["ok"] * len(staff)
        finally:
            for sock in sockets:
                await sock.close()


async def test_a_join_with_the_sockets_own_portal_token_looks_it_up_once(
    database_url: str, seed: Seed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's customers connect with their portal token and join with it again: the join
    takes the socket's identity (checked at connect, watched by the sweeper) instead of a
    second look-up, which after a restart was a batch's round trip for each of a thousand
    rejoins. Another token at join is still looked up, and a revoked connect token still
    closes the channel it joined with."""
    looked_up: list[str] = []
    fetch = Authenticator._fetch_portal_rows

    async def counted(self: Authenticator, digests: list[str]) -> dict[str, asyncpg.Record]:
        looked_up.extend(digests)
        return await fetch(self, digests)

    monkeypatch.setattr(Authenticator, "_fetch_portal_rows", counted)
    customer, token = await seed.customer()
    conversation = await seed.conversation(customer)
    other, other_token = await seed.customer()
    async with running_server(database_url) as srv:
        sock = await RawSocket.connect(srv.ws_url, token)
        try:
            topic = f"conversation:{conversation}"
            assert (await sock.join(topic, access_token=token))["status"] == "ok"
            assert looked_up == [hash_portal_token(token)]
            joined = await sock.join(f"customer:{other}:messages", access_token=other_token)
            assert joined["status"] == "ok"
            assert looked_up == [hash_portal_token(token), hash_portal_token(other_token)]
            await seed.revoke(token)
            await _system_then_close(topic, "Token has been revoked")(sock)
        finally:
            await sock.close()
