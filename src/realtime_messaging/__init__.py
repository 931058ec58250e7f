"""Real-time messaging for support conversations on PostgreSQL, speaking the Supabase Realtime protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .client import RealtimeMessagingManager, get_realtime_manager

__all__ = ["RealtimeMessagingManager", "get_realtime_manager"]


def __getattr__(name: str) -> Any:
    """The SDK is imported on first use, so the server never loads the client's dependencies."""
    if name in __all__:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
