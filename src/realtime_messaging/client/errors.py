"""Errors the SDK reports to ``on_error`` handlers, to subscription iterators, or raises."""

from __future__ import annotations


class RealtimeError(Exception):
    """Base of every SDK error."""


class ConnectionLostError(RealtimeError):
    """The socket dropped or could not connect; the SDK keeps reconnecting (transient)."""


class HeartbeatTimeoutError(ConnectionLostError):
    """No heartbeat reply in time: the connection is treated as half-open and replaced."""


class AuthenticationError(RealtimeError):
    """The server refused the socket's key (HTTP ``status`` 401 or 403 before the upgrade):
    a wrong anon key or a token signed with another secret. Not retried: fix the key."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class JoinRefusedError(RealtimeError):
    """The server refused a channel join (``reason`` is its ``"<Code>: <message>"``)."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"{topic}: {reason}")
        self.topic = topic
        self.reason = reason


class ChannelError(RealtimeError):
    """The server reported an error on a channel (a system error, or it closed the channel)."""

    def __init__(self, topic: str, message: str) -> None:
        super().__init__(f"{topic}: {message}")
        self.topic = topic
        self.message = message


class ChannelClosedError(ChannelError):
    """The server closed the channel (for instance its token expired); ``set_auth`` rejoins it."""


class HistoryLostError(RealtimeError):
    """Changes after ``position`` were pruned before the SDK could resume: reload your state."""

    def __init__(self, topic: str, position: int | None) -> None:
        super().__init__(f"{topic}: history after position {position} is lost; reload")
        self.topic = topic
        self.position = position


class ApiError(RealtimeError):
    """An HTTP API call answered with an error envelope; ``retry_after`` (seconds) when the
    server said when to try again (a rate limit's ``Retry-After``)."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
