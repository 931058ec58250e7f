"""The path of one frame: decode, heartbeat, the socket's budget, then its feature's handler.

A handler that fails errors its own channel (``phx_error``; clients rejoin) and nothing else:
the socket and every other channel on it carry on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from ...protocol import events
from ...protocol.connection import UNMATCHED
from ...protocol.errors import ProtocolError
from ..auth import expired_message
from ..eager import step
from . import broadcast, join, presence, tokens
from .channel import Channel
from .session import Pending, Session

log = logging.getLogger(__package__)

CLOSE_PROTOCOL_ERROR = 1007

#: What a client sends because its user did something (heartbeats and token refreshes are sent
#: by timers, leaves when a view closes).
_ACTIVITY = (events.JoinRequested, events.BroadcastReceived, events.PresenceReceived)

#: What is left of a frame's handling once its handler returns: nothing, or the work to await
#: (a function, so that nothing is created for a socket that closes before it starts).
Later = Callable[[], Coroutine[Any, Any, None]] | None


def on_frame(session: Session, data: Any, binary: bool) -> Pending | None:
    """Handle one frame at once, or return what is left to await (:class:`Session` awaits it
    before the next frame). A join runs at once up to its first wait (most never wait, and a
    task each was a tenth of a connect's CPU); the rest of what waits runs in the session's
    task, as the libraries they reach need (:mod:`..eager`)."""
    proto = session.proto
    try:
        event = proto.receive_binary(data) if binary else proto.receive_text(data)
    except ProtocolError as exc:
        session.server.errors["protocol"] += 1
        return session.shutdown(CLOSE_PROTOCOL_ERROR, f"malformed frame: {exc}"[:120])
    if isinstance(event, events.Heartbeat):
        session.outbox.text(proto.heartbeat_reply(event.ref))
        return None
    now = session.last_seen  # the loop's time when the frame was read
    if not session.push_budget.allow(now):
        topic = getattr(event, "topic", "phoenix")
        session.refuse(topic, getattr(event, "ref", None), None, "Too many messages per second")
        return None
    if isinstance(event, _ACTIVITY):
        session.server.liveness.activity(session.id, now)
    try:
        later = route(session, event)
    except Exception:
        _failed(session, event)
        return None
    if later is None:
        return None
    if isinstance(event, events.JoinRequested):
        return step(_guarded(session, event, later))
    return _guarded(session, event, later)


def route(session: Session, event: events.Event) -> Later:
    """Hand an event (heartbeats are answered before the budget) to its feature's handler; a
    push acts through a joined channel that may still act."""
    match event:
        case events.JoinRequested():
            return partial(join.handle_join, session, event)
        case events.BroadcastReceived() | events.PresenceReceived():
            channel = _acting_channel(session, event)
            if channel is None:
                return None
            if isinstance(event, events.PresenceReceived):
                return partial(presence.handle_presence, session, event, channel)
            return broadcast.handle_broadcast(session, event, channel)
        case events.AccessTokenReceived():
            return partial(tokens.handle_access_token, session, event)
        case events.LeaveRequested():
            join.handle_leave(session, event)
        case events.JoinRefused() | events.BadPush():
            session.refuse(event.topic, event.ref, event.join_ref, event.reason)
    return None


async def _guarded(
    session: Session, event: events.Event, later: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    try:
        await later()
    except Exception:
        _failed(session, event)


def _failed(session: Session, event: events.Event) -> None:
    """A handler failed: its channel errors (clients rejoin), the socket carries on."""
    topic: str = getattr(event, "topic", "phoenix")
    log.exception("error handling %s on %s", type(event).__name__, topic)
    channel = session.channels.get(topic)
    if channel is not None:
        session.drop(channel)
        session.outbox.text(session.proto.error_channel(topic))


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
