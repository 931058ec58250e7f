"""The Python SDK: :class:`RealtimeMessagingManager` and the socket it is built on."""

from .errors import (
    ApiError,
    ChannelClosedError,
    ChannelError,
    ConnectionLostError,
    HeartbeatTimeoutError,
    HistoryLostError,
    JoinRefusedError,
    RealtimeError,
)
from .events import (
    DeliveryStatusEvent,
    Event,
    MessageEvent,
    PresenceEvent,
    ReadReceiptEvent,
    TypingIndicatorEvent,
)
from .manager import RealtimeMessagingManager, Subscription, get_realtime_manager
from .socket import ChannelState, RealtimeSocket, SocketChannel

__all__ = [
    "ApiError",
    "ChannelClosedError",
    "ChannelError",
    "ChannelState",
    "ConnectionLostError",
    "DeliveryStatusEvent",
    "Event",
    "HeartbeatTimeoutError",
    "HistoryLostError",
    "JoinRefusedError",
    "MessageEvent",
    "PresenceEvent",
    "RealtimeError",
    "RealtimeMessagingManager",
    "RealtimeSocket",
    "ReadReceiptEvent",
    "SocketChannel",
    "Subscription",
    "TypingIndicatorEvent",
    "get_realtime_manager",
]
