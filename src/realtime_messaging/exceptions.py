"""Errors raised by realtime-messaging.

RealtimeMessagingError
├── ConfigurationError          settings that cannot work
├── EmbeddedDatabaseError       the private PostgreSQL could not be started
└── MigrationError              a migration failed or an applied one was changed
"""


class RealtimeMessagingError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(RealtimeMessagingError):
    """Settings that cannot work together."""


class EmbeddedDatabaseError(RealtimeMessagingError):
    """The embedded PostgreSQL could not be started."""


class MigrationError(RealtimeMessagingError):
    """A migration failed, or one already applied no longer matches its file."""
