"""Broadcast on a channel, and typing: a ``typing`` broadcast from a staff user or customer
also writes their typing indicator."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import asyncpg

from ...broker import Envelope
from ...domain.identity import TopicKind, parse_topic
from ...protocol.connection import subtopic
from ...protocol.events import BroadcastReceived
from ...store.liveness import write_typing
from ..api.errors import ApiError
from ..api.framework import caller_of, map_database_error
from ..fanout import broadcast_payload
from .channel import Channel
from .session import Session


def handle_broadcast(
    session: Session, event: BroadcastReceived, channel: Channel
) -> Callable[[], Coroutine[Any, Any, None]] | None:
    """Publish at once; a typing push returns its database write, to be awaited."""
    if channel.access is not None and not channel.access.write:
        # No INSERT policy for the caller on this private channel: dropped without a word, as
        # Supabase does.
        return None
    if event.event == "typing" and (event.binary is None or event.binary.json_encoded):
        # realtime-js under vsn 2.0.0 sends every broadcast as a binary frame with a JSON
        # payload: a typing push all the same.
        return partial(typing, session, event, channel)
    publish(session, event, channel)
    return None


def publish(session: Session, event: BroadcastReceived, channel: Channel) -> None:
    """Publish to every member of the topic, in every process; acknowledge if asked to."""
    exclude = None if channel.config.broadcast_self else channel.key
    binary = event.binary
    private = channel.config.private
    if binary is None:
        envelope = Envelope(
            event.topic,
            "broadcast",
            broadcast_payload(event.event, event.payload),
            exclude,
            private=private,
        )
    else:
        envelope = Envelope(
            event.topic,
            "broadcast",
            broadcast_payload(event.event, event.payload),
            exclude,
            user_event=binary.event,
            binary=binary.payload,
            json_encoded=binary.json_encoded,
            private=private,
        )
    session.server.broker.publish(envelope)
    if channel.config.broadcast_ack and event.ref is not None:
        session.reply_ok(event.topic, event.ref, channel.join_ref)


async def typing(session: Session, event: BroadcastReceived, channel: Channel) -> None:
    """A ``typing`` broadcast from a staff user or customer is also a typing indicator,
    owned by this connection (so it ends when the connection does), under the typing rate
    limit. From anyone else it is a plain broadcast."""
    identity = channel.identity
    server = session.server
    connection_id = server.liveness.connection_id(session.id, identity)
    payload = event.payload if isinstance(event.payload, dict) else {}
    topic = parse_topic(subtopic(event.topic))
    conversation: Any = topic.subject if topic.kind is TopicKind.CONVERSATION else None
    conversation = conversation or payload.get("conversationId")
    if connection_id is None or conversation is None:
        publish(session, event, channel)
        return
    is_typing = payload.get("isTyping", payload.get("is_typing"))
    reason = None
    try:
        conversation = uuid.UUID(str(conversation))
    except ValueError:
        reason = "typing: conversationId is not a UUID"
    if not isinstance(is_typing, bool):
        reason = "typing: the payload needs isTyping, true or false"
    if reason is None and isinstance(is_typing, bool):
        caller = caller_of(identity)
        try:
            await server.limiter.check_typing(caller.user_id or caller.customer_id, conversation)
            async with server.pool.acquire() as conn:
                await write_typing(conn, caller, conversation, is_typing, connection_id)
        except ApiError as exc:
            reason = exc.message
        except asyncpg.PostgresError as exc:
            mapped = map_database_error(exc)
            if mapped is None:
                raise
            reason = f"typing: {mapped.message}"
    if reason is not None:
        if event.ref is not None:
            session.refuse(event.topic, event.ref, channel.join_ref, reason)
        return
    if session.channels.get(event.topic) is channel:  # not closed while the row was written
        publish(session, event, channel)
