"""Real-time messaging for support conversations on PostgreSQL, speaking the Supabase Realtime protocol."""

__version__ = "0.1.0"
