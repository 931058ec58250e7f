"""What a client's frame means, as the server sees it: one event per kind of push."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .frames import UserBroadcast
from .join import JoinConfig


@dataclass(frozen=True, slots=True)
class Heartbeat:
    ref: str | None


@dataclass(frozen=True, slots=True)
class JoinRequested:
    topic: str
    ref: str | None
    join_ref: str | None
    config: JoinConfig
    access_token: str | None


@dataclass(frozen=True, slots=True)
class JoinRefused:
    """A join whose payload could not be accepted; the server replies with ``reason``."""

    topic: str
    ref: str | None
    join_ref: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class LeaveRequested:
    topic: str
    ref: str | None
    join_ref: str | None


@dataclass(slots=True)
class BroadcastReceived:
    """A broadcast push; ``binary`` is set when it came as a kind-3 frame. Never changed once
    made, but not frozen: one is built per broadcast, and a frozen one costs four times as much."""

    topic: str
    ref: str | None
    event: str
    payload: Any
    binary: UserBroadcast | None = None


@dataclass(frozen=True, slots=True)
class PresenceReceived:
    topic: str
    ref: str | None
    action: str  # "track" or "untrack"
    payload: Any


@dataclass(frozen=True, slots=True)
class AccessTokenReceived:
    topic: str
    token: str | None


@dataclass(frozen=True, slots=True)
class BadPush:
    """A push to a joined channel that cannot be honoured; the server replies with ``reason``."""

    topic: str
    ref: str | None
    join_ref: str | None
    reason: str


Event = (
    Heartbeat
    | JoinRequested
    | JoinRefused
    | LeaveRequested
    | BroadcastReceived
    | PresenceReceived
    | AccessTokenReceived
    | BadPush
)
