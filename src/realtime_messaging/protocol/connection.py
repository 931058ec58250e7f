"""The server side of one Phoenix socket, sans I/O.

Feed it client frames with :meth:`ServerConnection.receive_text` / :meth:`receive_binary`; it
returns one :mod:`events` object per frame and keeps track of which topics are joined under
which ``join_ref``. It builds the reply and push frames; the I/O layer writes them. Frames that
cannot be decoded at all raise :class:`ProtocolError`, for which the I/O layer closes the socket
with 1007.
"""

from __future__ import annotations

from typing import Any

from ..domain.bounds import (
    DEFAULT_LIMITS,
    InputLimits,
    depth_message,
    may_nest_deeper,
    too_deep,
)
from .errors import ProtocolError
from .events import (
    AccessTokenReceived,
    BadPush,
    BroadcastReceived,
    Event,
    Heartbeat,
    JoinRefused,
    JoinRequested,
    LeaveRequested,
    PresenceReceived,
)
from .frames import Message, Vsn, decode_binary, decode_text, encode
from .join import JoinError, parse_join_payload

TOPIC_PREFIX = "realtime:"
UNMATCHED = "unmatched topic"


def subtopic(topic: str) -> str:
    """``realtime:room1`` → ``room1`` (what ``system`` messages call the channel)."""
    return topic[len(TOPIC_PREFIX) :] if topic.startswith(TOPIC_PREFIX) else topic


class ServerConnection:
    """Protocol state of one socket: its serializer and the join ref of each joined topic."""

    __slots__ = ("vsn", "limits", "joined")

    def __init__(self, vsn: Vsn, limits: InputLimits = DEFAULT_LIMITS) -> None:
        self.vsn = vsn
        self.limits = limits
        self.joined: dict[str, str | None] = {}

    # -- inbound -------------------------------------------------------------------------

    def receive_text(self, data: str | bytes) -> Event:
        deep = may_nest_deeper(data, self.limits.max_json_depth)
        return self._interpret(decode_text(self.vsn, data), deep)

    def receive_binary(self, data: bytes) -> Event:
        frame = decode_binary(self.vsn, data)
        if frame.topic not in self.joined:
            return BadPush(frame.topic, frame.ref, frame.join_ref, UNMATCHED)
        payload = frame.as_message().payload if frame.json_encoded else None
        body = payload["payload"] if payload is not None else None
        limit = self.limits.max_json_depth
        if may_nest_deeper(frame.payload, limit) and too_deep(body, limit):
            return BadPush(
                frame.topic, frame.ref, frame.join_ref, depth_message(self.limits.max_json_depth)
            )
        return BroadcastReceived(frame.topic, frame.ref, frame.event, body, frame)

    def _interpret(self, msg: Message, deep: bool) -> Event:
        """``deep``: whether the frame's text could nest past the depth limit at all."""
        topic, event = msg.topic, msg.event
        if topic == "phoenix":
            if event == "heartbeat":
                return Heartbeat(msg.ref)
            return BadPush(topic, msg.ref, msg.join_ref, UNMATCHED)
        if deep and too_deep(msg.payload, self.limits.max_json_depth):
            problem = depth_message(self.limits.max_json_depth)
            if event == "phx_join":
                return JoinRefused(topic, msg.ref, msg.join_ref, f"InvalidJoinPayload: {problem}")
            return BadPush(topic, msg.ref, msg.join_ref, problem)
        if event == "phx_join":
            return self._join(msg)
        if event == "phx_leave":
            return LeaveRequested(topic, msg.ref, msg.join_ref)
        if topic not in self.joined:
            return BadPush(topic, msg.ref, msg.join_ref, UNMATCHED)
        payload = msg.payload
        if event == "broadcast":
            if not isinstance(payload, dict) or not isinstance(payload.get("event"), str):
                return BadPush(topic, msg.ref, msg.join_ref, "broadcast needs an event name")
            return BroadcastReceived(topic, msg.ref, payload["event"], payload.get("payload"))
        if event == "presence":
            action = payload.get("event") if isinstance(payload, dict) else None
            if not isinstance(action, str) or action.lower() not in ("track", "untrack"):
                return BadPush(
                    topic, msg.ref, msg.join_ref, "presence event must be track or untrack"
                )
            return PresenceReceived(topic, msg.ref, action.lower(), payload.get("payload"))
        if event == "access_token":
            token = payload.get("access_token") if isinstance(payload, dict) else None
            return AccessTokenReceived(topic, token if isinstance(token, str) else None)
        return BadPush(topic, msg.ref, msg.join_ref, f"unknown event {event!r}")

    def _join(self, msg: Message) -> Event:
        topic = msg.topic
        if not topic.startswith(TOPIC_PREFIX):
            return JoinRefused(topic, msg.ref, msg.join_ref, UNMATCHED)
        if topic == TOPIC_PREFIX:
            return JoinRefused(
                topic, msg.ref, msg.join_ref, "TopicNameRequired: You must provide a topic name"
            )
        try:
            config, token = parse_join_payload(msg.payload, self.limits)
        except JoinError as exc:
            return JoinRefused(topic, msg.ref, msg.join_ref, exc.reason)
        # Phoenix sends join_ref == ref on joins; fall back to ref when a client omits it.
        return JoinRequested(topic, msg.ref, msg.join_ref or msg.ref, config, token)

    # -- state ---------------------------------------------------------------------------

    def joined_ref(self, topic: str) -> str | None:
        return self.joined.get(topic)

    def is_joined(self, topic: str) -> bool:
        return topic in self.joined

    def accept(self, join: JoinRequested, response: dict[str, Any]) -> bytes:
        """Record the join (replacing an earlier one on the topic) and build its ok reply."""
        self.joined[join.topic] = join.join_ref
        return self.reply(join.topic, join.ref, join.join_ref, "ok", response)

    def refuse(self, topic: str, ref: str | None, join_ref: str | None, reason: str) -> bytes:
        return self.reply(topic, ref, join_ref, "error", {"reason": reason})

    def leave(self, leave: LeaveRequested) -> list[bytes]:
        """Forget the topic; reply ok, then ``phx_close`` when the topic was joined."""
        join_ref = self.joined.pop(leave.topic, None)
        frames = [self.reply(leave.topic, leave.ref, leave.join_ref, "ok", {})]
        if join_ref is not None or leave.join_ref is not None:
            ref = join_ref or leave.join_ref
            frames.append(self.frame(Message(leave.topic, "phx_close", {}, ref, ref)))
        return frames

    def close_channel(
        self, topic: str, system_payload: dict[str, Any] | None = None
    ) -> list[bytes]:
        """Server-initiated close: an optional ``system`` message, then ``phx_close``."""
        join_ref = self.joined.pop(topic, None)
        frames = []
        if system_payload is not None:
            frames.append(self.push(topic, "system", system_payload, join_ref))
        frames.append(self.frame(Message(topic, "phx_close", {}, join_ref, join_ref)))
        return frames

    def error_channel(self, topic: str) -> bytes:
        """``phx_error`` for a channel that failed inside the server; clients rejoin."""
        join_ref = self.joined.pop(topic, None)
        return self.frame(Message(topic, "phx_error", {}, join_ref, join_ref))

    # -- outbound ------------------------------------------------------------------------

    def frame(self, message: Message) -> bytes:
        return encode(self.vsn, message)

    def reply(
        self,
        topic: str,
        ref: str | None,
        join_ref: str | None,
        status: str,
        response: dict[str, Any],
    ) -> bytes:
        return self.frame(
            Message(topic, "phx_reply", {"status": status, "response": response}, ref, join_ref)
        )

    def heartbeat_reply(self, ref: str | None) -> bytes:
        return self.reply("phoenix", ref, None, "ok", {})

    def push(self, topic: str, event: str, payload: Any, join_ref: str | None = None) -> bytes:
        """A server push (``ref`` null), e.g. ``system`` or ``presence_state``."""
        return self.frame(Message(topic, event, payload, None, join_ref))


__all__ = ["ProtocolError", "ServerConnection", "subtopic"]
