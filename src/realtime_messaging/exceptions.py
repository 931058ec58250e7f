"""Errors raised by realtime-messaging.

RealtimeMessagingError
├── ConfigurationError          settings that cannot work
├── DatabaseUnavailableError    the database did not accept a connection
├── EmbeddedDatabaseError       the private PostgreSQL could not be started
└── MigrationError              a migration failed or an applied one was changed
"""


class RealtimeMessagingError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(RealtimeMessagingError):
    """Settings that cannot work together."""


class DatabaseUnavailableError(RealtimeMessagingError):
    """The database did not accept a connection."""


class EmbeddedDatabaseError(RealtimeMessagingError):
    """The embedded PostgreSQL could not be started."""


class MigrationError(RealtimeMessagingError):
    """A migration failed, or one already applied no longer matches its file."""
