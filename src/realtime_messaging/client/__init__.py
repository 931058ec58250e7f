"""The Python SDK: :class:`RealtimeMessagingManager`, the socket it is built on, and helpers."""

from .errors import (
    ApiError,
    AuthenticationError,
    ChannelClosedError,
    ChannelError,
    ConnectionLostError,
    HeartbeatTimeoutError,
    HistoryLostError,
    JoinRefusedError,
    RealtimeError,
)
from .events import (
    ConversationEvent,
    ConversationRow,
    DeliveryStatusEvent,
    Event,
    MessageEvent,
    PresenceEvent,
    ReadReceiptEvent,
    RejoinEvent,
    TypingIndicatorEvent,
)
from .helpers import PresenceHelper, RateBudget, ReadTracker, TypingHelper
from .manager import RealtimeMessagingManager, Subscription, get_realtime_manager
from .search import SearchResult
from .socket import ChannelState, RealtimeSocket, SocketChannel

__all__ = [
    "ApiError",
    "AuthenticationError",
    "ChannelClosedError",
    "ChannelError",
    "ChannelState",
    "ConnectionLostError",
    "ConversationEvent",
    "ConversationRow",
    "DeliveryStatusEvent",
    "Event",
    "HeartbeatTimeoutError",
    "HistoryLostError",
    "JoinRefusedError",
    "MessageEvent",
    "PresenceEvent",
    "PresenceHelper",
    "RateBudget",
    "RealtimeError",
    "RealtimeMessagingManager",
    "RealtimeSocket",
    "ReadReceiptEvent",
    "ReadTracker",
    "RejoinEvent",
    "SearchResult",
    "SocketChannel",
    "Subscription",
    "TypingHelper",
    "TypingIndicatorEvent",
    "get_realtime_manager",
]
