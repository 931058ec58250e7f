"""The Supabase Realtime WebSocket endpoint: sessions, channels, broadcast, presence, auth.

One :class:`~.session.Session` per socket reads frames; :mod:`.dispatch` hands each to its
feature's handler (:mod:`.join`, :mod:`.broadcast`, :mod:`.presence`, :mod:`.changes`,
:mod:`.tokens`). Joined channels are :class:`~.channel.Channel` members of the process's hub;
everything a channel publishes goes through the broker, so several processes behave as one.
Every module logs under this package's name.
"""

from .endpoint import RealtimeServer

__all__ = ["RealtimeServer"]
