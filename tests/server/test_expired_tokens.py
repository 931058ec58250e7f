"""Issue 12, finding 1: a token that has expired on an open socket acts no more.

The socket's own token (its ``apikey``) and a channel's token are checked at every join and
every push, not only when the expiry timer fires.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from typing import Any

import asyncpg
import jwt

from realtime_messaging.keys import ISSUER
from tests.conftest import TEST_SECRET, RunningServer, Seed

from .wsclient import RawSocket


def _expiring_soon(user_id: uuid.UUID) -> tuple[str, float]:
    """A staff token valid now that expires within 0.3 to 1.3 seconds, and its expiry (issued
    in the past: a token issued in the future is refused as not yet valid)."""
    exp = math.ceil(time.time() + 0.3)
    claims = {
        "iss": ISSUER,
        "sub": str(user_id),
        "role": "authenticated",
        "iat": exp - 60,
        "exp": exp,
    }
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256"), float(exp)


async def _past(exp: float) -> None:
    """Let the wall clock pass ``exp`` (what expiry is measured against)."""
    while time.time() <= exp:
        await asyncio.sleep(exp - time.time() + 0.01)


def _typing_push(topic: str, ref: str, join_ref: str) -> tuple[str, str, dict[str, Any], str, str]:
    payload = {"type": "broadcast", "event": "typing", "payload": {"isTyping": True}}
    return f"realtime:{topic}", "broadcast", payload, ref, join_ref


async def test_expired_socket_token_cannot_join_or_write_typing(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    """The reported attack: a staff socket whose apikey expired joins the customer's presence
    topic and, at once, the conversation with a typing push."""
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    staff, _ = await seed.staff()
    token, exp = _expiring_soon(staff)
    attacker = await RawSocket.connect(server.ws_url, token)
    try:
        await _past(exp)
        presence_ref = attacker.next_ref()
        await attacker.send(
            f"realtime:presence:{conversation}", "phx_join", {}, presence_ref, presence_ref
        )
        join_ref = attacker.next_ref()
        await attacker.send(
            f"realtime:conversation:{conversation}", "phx_join", {}, join_ref, join_ref
        )
        await attacker.send(
            *_typing_push(f"conversation:{conversation}", attacker.next_ref(), join_ref)
        )
        reply = await attacker.reply_to(presence_ref)
        assert reply["payload"]["status"] == "error", reply
        assert reply["payload"]["response"]["reason"].startswith(
            "InvalidJWTToken: Token has expired"
        ), reply
        assert await attacker.closed() == 1008
    finally:
        await attacker.close()
    typing_rows = await pool.fetchval(
        "SELECT count(*) FROM message_typing_indicators WHERE user_id = $1", staff
    )
    assert typing_rows == 0
    # The expired user never became present on the conversation: a join sees nobody there.
    sock = await RawSocket.connect(server.ws_url, portal)
    try:
        assert (await sock.join(f"presence:{conversation}"))["status"] == "ok"
        state = await sock.expect(lambda m: m.get("event") == "presence_state")
        assert state["payload"] == {}, state
    finally:
        await sock.close()


async def test_push_on_a_channel_whose_token_expired_is_refused_and_not_relayed(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    staff, staff_token = await seed.staff()
    topic = f"conversation:{conversation}"
    token, exp = _expiring_soon(staff)
    listener = await RawSocket.connect(server.ws_url, portal)
    sender = await RawSocket.connect(server.ws_url, server.anon_key)
    other = await RawSocket.connect(server.ws_url, staff_token)
    try:
        assert (await listener.join(topic))["status"] == "ok"
        assert (await other.join(topic))["status"] == "ok"
        joined = await sender.join(topic, access_token=token)
        assert joined["status"] == "ok", joined
        await _past(exp)
        # Whether the expiry timer has closed the channel yet or not, the push is refused.
        for push in (
            _typing_push(topic, sender.next_ref(), "1"),
            (
                f"realtime:{topic}",
                "broadcast",
                {"type": "broadcast", "event": "late", "payload": {}},
                sender.next_ref(),
                "1",
            ),
        ):
            await sender.send(*push)
            reply = await sender.reply_to(push[3])
            assert reply["payload"]["status"] == "error", reply
        await other.send(
            f"realtime:{topic}",
            "broadcast",
            {"type": "broadcast", "event": "marker", "payload": {}},
            other.next_ref(),
            "1",
        )
        first = await listener.expect(lambda m: m.get("event") == "broadcast")
        assert first["payload"]["event"] == "marker", first
    finally:
        for sock in (listener, sender, other):
            await sock.close()
    typing_rows = await pool.fetchval(
        "SELECT count(*) FROM message_typing_indicators WHERE user_id = $1", staff
    )
    assert typing_rows == 0
