"""The path of one frame: decode, heartbeat, the socket's budget, then its feature's handler.

A handler that fails errors its own channel (``phx_error``; clients rejoin) and nothing else:
the socket and every other channel on it carry on.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ...protocol import events
from ...protocol.connection import UNMATCHED
from ...protocol.errors import ProtocolError
from ..auth import expired_message
from . import broadcast, join, presence, tokens
from .channel import Channel
from .session import Session

log = logging.getLogger(__package__)

CLOSE_PROTOCOL_ERROR = 1007

#: What a client sends because its user did something (heartbeats and token refreshes are sent
#: by timers, leaves when a view closes).
_ACTIVITY = (events.JoinRequested, events.BroadcastReceived, events.PresenceReceived)


async def on_frame(session: Session, data: Any, binary: bool) -> None:
    proto = session.proto
    try:
        event = proto.receive_binary(data) if binary else proto.receive_text(data)
    except ProtocolError as exc:
        session.server.errors["protocol"] += 1
        await session.shutdown(CLOSE_PROTOCOL_ERROR, f"malformed frame: {exc}"[:120])
        return
    if isinstance(event, events.Heartbeat):
        session.outbox.text(proto.heartbeat_reply(event.ref))
        return
    if not session.push_budget.allow(time.monotonic()):
        topic = getattr(event, "topic", "phoenix")
        session.refuse(topic, getattr(event, "ref", None), None, "Too many messages per second")
        return
    if isinstance(event, _ACTIVITY):
        session.server.liveness.activity(session.id)
    try:
        await route(session, event)
    except Exception:
        topic = event.topic
        log.exception("error handling %s on %s", type(event).__name__, topic)
        channel = session.channels.get(topic)
        if channel is not None:
            session.drop(channel)
            session.outbox.text(proto.error_channel(topic))


async def route(session: Session, event: events.Event) -> None:
    """Hand an event (heartbeats are answered before the budget) to its feature's handler; a
    push acts through a joined channel that may still act."""
    match event:
        case events.JoinRequested():
            await join.handle_join(session, event)
        case events.BroadcastReceived() | events.PresenceReceived():
            channel = _acting_channel(session, event)
            if channel is None:
                return
            if isinstance(event, events.PresenceReceived):
                await presence.handle_presence(session, event, channel)
            else:
                await broadcast.handle_broadcast(session, event, channel)
        case events.AccessTokenReceived():
            await tokens.handle_access_token(session, event)
        case events.LeaveRequested():
            join.handle_leave(session, event)
        case events.JoinRefused() | events.BadPush():
            session.refuse(event.topic, event.ref, event.join_ref, event.reason)


def _acting_channel(
    session: Session, event: events.BroadcastReceived | events.PresenceReceived
) -> Channel | None:
    """The channel a push acts through, if it may still act: a push on a channel whose
    token has expired gets an error reply and closes the channel, before anything is
    published or written (the expiry timer may not have fired yet)."""
    channel = session.channels.get(event.topic)
    if channel is None:
        session.refuse(event.topic, event.ref, None, UNMATCHED)
        return None
    exp = channel.identity.expires_at
    if exp is not None and exp <= time.time():
        session.refuse(event.topic, event.ref, channel.join_ref, expired_message(exp, time.time()))
        tokens.expire(session, channel)
        return None
    return channel
