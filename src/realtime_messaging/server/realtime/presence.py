"""Presence on a channel: track and untrack, and a participant's presence on a conversation,
which follows the channel and the participant's presence row."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from ...domain.bounds import metadata_problem
from ...protocol.connection import subtopic
from ...protocol.events import PresenceReceived
from ...store.changefeed import Change
from ...store.liveness import Participant
from ..api.errors import ApiError
from ..cluster import diff_envelope
from .channel import Channel
from .session import Session
from .shared import Shared


async def handle_presence(session: Session, event: PresenceReceived, channel: Channel) -> None:
    server = session.server
    registry = server.presence
    if event.action == "track":
        problem: str | None
        if not isinstance(event.payload, dict):
            problem = "Presence track payload must be a map"
        else:
            problem = metadata_problem(event.payload, server.settings.input_limits)
        if problem is None and channel.access is not None and not channel.access.presence_write:
            problem = (
                "Unauthorized: You do not have permissions to track presence on this Channel "
                f"topic: {subtopic(event.topic)}"
            )
        if problem is not None:
            session.refuse(event.topic, event.ref, channel.join_ref, problem)
            return
        if channel.participant is not None:
            # The same action as setting one's presence over HTTP: the same limit.
            try:
                await server.limiter.check_presence(channel.participant["key"])
            except ApiError as exc:
                session.refuse(event.topic, event.ref, channel.join_ref, exc.message)
                return
            if session.channels.get(event.topic) is not channel:
                return  # closed while the limit was checked
            channel.tracked = event.payload
            session.reply_ok(event.topic, event.ref, channel.join_ref)
            retrack(server, channel)
            return
        if not channel.presence_key:
            channel.presence_key = str(uuid.uuid1())  # Supabase's key for an empty one
        diff = registry.track(
            channel.presence_scope, channel.key, channel.presence_key, event.payload
        )
    elif channel.participant is not None:
        # A participant's presence on a conversation follows the channel: untrack only
        # drops the fields the client added.
        channel.tracked = {}
        session.reply_ok(event.topic, event.ref, channel.join_ref)
        retrack(server, channel)
        return
    else:
        diff = registry.untrack(channel.presence_scope, channel.key)
    session.reply_ok(event.topic, event.ref, channel.join_ref)
    if diff is not None:
        server.broker.publish(diff_envelope(diff))


def stand_for(server: Shared[Session], channel: Channel, participant: Participant) -> None:
    """Make the participant present on the conversation's presence topic while ``channel`` is
    joined, under their own id, with their presence row's status."""
    key = str(participant.user_id or participant.customer_id)
    channel.participant = {
        "key": key,
        "kind": "staff" if participant.user_id else "customer",
        "status": "online",
    }
    server.participant_channels.setdefault(key, set()).add(channel)
    retrack(server, channel)


def retrack(server: Shared[Session], channel: Channel) -> None:
    """Publish the participant's presence on a conversation: what the client tracked, with
    the server's fields (key, kind, status) over it."""
    assert channel.participant is not None
    meta = {**channel.tracked, **channel.participant}
    diff = server.presence.track(
        channel.presence_scope, channel.key, channel.participant["key"], meta
    )
    if diff is not None:
        server.broker.publish(diff_envelope(diff))


def presence_changed(server: Shared[Session], changes: Sequence[Change]) -> None:
    """Keep the ``status`` in the Phoenix presence metas equal to the presence rows."""
    for change in changes:
        if change.table != "user_presence" or change.record is None:
            continue
        record = change.record
        key = str(record.get("user_id") or record.get("customer_id"))
        status = record.get("status")
        if not isinstance(status, str):
            continue  # a degraded change (store/changefeed.py) carries no status
        for channel in list(server.participant_channels.get(key, ())):
            assert channel.participant is not None
            if channel.participant["status"] != status:
                channel.participant = {**channel.participant, "status": status}
                retrack(server, channel)
