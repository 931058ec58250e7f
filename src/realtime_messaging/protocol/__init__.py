"""The Phoenix / Supabase Realtime wire protocol, sans I/O: bytes in, events and frames out.

Nothing here touches a socket, an event loop or a clock. The server and the SDK drive it.
"""
