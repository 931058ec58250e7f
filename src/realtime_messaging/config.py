"""Settings read once from the environment (``RTM_`` prefix) and command-line flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .domain.bounds import InputLimits
from .storage.s3 import S3Config


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _input_limits() -> InputLimits:
    default = InputLimits()
    return InputLimits(
        max_json_depth=int(_env("RTM_MAX_JSON_DEPTH") or default.max_json_depth),
        max_bindings_per_join=int(
            _env("RTM_MAX_BINDINGS_PER_JOIN") or default.max_bindings_per_join
        ),
        max_bindings_per_socket=int(
            _env("RTM_MAX_BINDINGS_PER_SOCKET") or default.max_bindings_per_socket
        ),
        max_metadata_bytes=int(_env("RTM_MAX_METADATA_BYTES") or default.max_metadata_bytes),
    )


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _flag(name: str) -> bool:
    value = (_env(name) or "0").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}: expected 1 or 0, not {value!r}")


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """The webhook worker's settings (docs/webhooks.md, "Settings")."""

    #: Run the worker in this process (``RTM_WEBHOOKS``, on by default).
    enabled: bool = True
    #: Longest wait between looks at the outbox when no notification wakes the worker
    #: (``RTM_WEBHOOK_POLL_INTERVAL``, seconds).
    poll_interval: float = 1.0
    #: One delivery attempt, connection to the end of the answer (``RTM_WEBHOOK_TIMEOUT``).
    timeout: float = 10.0
    #: Retry delays: ``retry_base`` doubled per attempt, at most ``retry_max``, with jitter; given
    #: up (dead) once ``retry_window`` has passed since the event (``RTM_WEBHOOK_RETRY_BASE``,
    #: ``RTM_WEBHOOK_RETRY_MAX``, ``RTM_WEBHOOK_RETRY_WINDOW``, seconds).
    retry_base: float = 10.0
    retry_max: float = 3600.0
    retry_window: float = 24 * 3600.0
    #: Post to private, loopback and link-local addresses too (``RTM_WEBHOOK_ALLOW_PRIVATE``);
    #: off by default: a webhook URL must not reach the server's own network (SSRF).
    allow_private: bool = False

    @classmethod
    def from_env(cls) -> WebhookSettings:
        enabled = (_env("RTM_WEBHOOKS") or "on").strip().lower()
        if enabled not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ValueError(f"RTM_WEBHOOKS: expected on or off, not {enabled!r}")
        return cls(
            enabled=enabled in ("1", "true", "yes", "on"),
            poll_interval=float(_env("RTM_WEBHOOK_POLL_INTERVAL") or "1"),
            timeout=float(_env("RTM_WEBHOOK_TIMEOUT") or "10"),
            retry_base=float(_env("RTM_WEBHOOK_RETRY_BASE") or "10"),
            retry_max=float(_env("RTM_WEBHOOK_RETRY_MAX") or "3600"),
            retry_window=float(_env("RTM_WEBHOOK_RETRY_WINDOW") or "86400"),
            allow_private=_flag("RTM_WEBHOOK_ALLOW_PRIVATE"),
        )


@dataclass(frozen=True, slots=True)
class FileSettings:
    """Attachments: upload bounds, download links, and the store (docs/files.md)."""

    #: Largest upload (``RTM_UPLOAD_MAX_BYTES``, default 25 MiB); refused with 413 as soon as
    #: more arrived, before the rest is read.
    max_bytes: int = 25 * 1024 * 1024
    #: Accepted content types (``RTM_UPLOAD_CONTENT_TYPES``, comma separated); empty: the
    #: default list of :data:`realtime_messaging.storage.policy.DEFAULT_CONTENT_TYPES`.
    content_types: tuple[str, ...] = ()
    #: Unsent uploads one uploader may have pending at once (``RTM_UPLOAD_MAX_PENDING``).
    max_pending: int = 50
    #: Lifetime of a signed download URL (``RTM_DOWNLOAD_URL_TTL``, seconds).
    url_ttl: int = 300
    #: An upload not sent with a message within this long is deleted, row and bytes
    #: (``RTM_UPLOAD_PENDING_TTL``, seconds, default a day).
    pending_ttl: float = 24 * 3600.0
    #: How often the purge worker deletes expired uploads and the stored bytes of deleted files
    #: (``RTM_PURGE_INTERVAL``, seconds).
    purge_interval: float = 60.0
    #: The S3-compatible store; None: files under ``<data dir>/attachments``.
    s3: S3Config | None = None

    @classmethod
    def from_env(cls) -> FileSettings:
        bucket = _env("RTM_S3_BUCKET")
        s3 = None
        if bucket:
            s3 = S3Config(
                bucket=bucket,
                endpoint_url=_env("RTM_S3_ENDPOINT_URL"),
                region=_env("RTM_S3_REGION"),
                access_key_id=_env("RTM_S3_ACCESS_KEY_ID"),
                secret_access_key=_env("RTM_S3_SECRET_ACCESS_KEY"),
                prefix=_env("RTM_S3_PREFIX") or "",
                path_style=(_env("RTM_S3_ADDRESSING", "path") or "path") == "path",
                part_size=int(_env("RTM_S3_PART_SIZE") or 8 * 1024 * 1024),
            )
        types = (_env("RTM_UPLOAD_CONTENT_TYPES") or "").replace(",", " ").split()
        return cls(
            max_bytes=int(_env("RTM_UPLOAD_MAX_BYTES") or 25 * 1024 * 1024),
            content_types=tuple(t.strip().lower() for t in types),
            max_pending=int(_env("RTM_UPLOAD_MAX_PENDING") or 50),
            url_ttl=int(_env("RTM_DOWNLOAD_URL_TTL") or 300),
            pending_ttl=float(_env("RTM_UPLOAD_PENDING_TTL") or 86400),
            purge_interval=float(_env("RTM_PURGE_INTERVAL") or 60),
            s3=s3,
        )


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a process needs to know; built by the CLI, passed down explicitly."""

    database_url: str | None = None
    redis_url: str | None = None
    #: How processes reach each other (``RTM_BROKER``): ``redis`` (``RTM_REDIS_URL``),
    #: ``postgres`` (through the database, no Redis needed), ``local`` (one process), or
    #: ``auto``: redis with a Redis URL, else postgres under ``--workers``, else local.
    broker: str = "auto"
    #: Worker processes of ``rtm serve`` (``RTM_WORKERS``); 1 runs in the command's process.
    workers: int = 1
    #: How long a stopping process may take to close its sockets and finish its requests
    #: before it is killed (``RTM_GRACEFUL_TIMEOUT``, seconds).
    graceful_timeout: float = 30.0
    #: Serve https:// and wss:// directly with this certificate (chain) and private key, both
    #: PEM files (``RTM_TLS_CERT``, ``RTM_TLS_KEY``); unset: plain http, or TLS at a proxy.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    jwt_secret: str | None = None
    host: str = "127.0.0.1"
    port: int = 4000
    #: The URL clients are told to connect to (``RTM_PUBLIC_URL``); None: the listen address.
    #: Never taken from the request's Host header (docs/api.md).
    public_url: str | None = None
    #: Behind a reverse proxy that sets them: take X-Forwarded-Proto/-Host over ``public_url``
    #: (``RTM_TRUST_PROXY_HEADERS``).
    trust_proxy_headers: bool = False
    #: Origins of other sites that may show the customer chat (``/portal``) in an iframe
    #: (``RTM_EMBED_ORIGINS``, separated by spaces or commas); none by default.
    embed_origins: tuple[str, ...] = ()
    #: Origins whose pages may call the HTTP API from a browser (``RTM_CORS_ORIGINS``, comma
    #: separated, ``*`` for any); none by default: same origin only (docs/api.md).
    cors_origins: tuple[str, ...] = ()
    data_dir: Path = field(default_factory=lambda: Path(".rtm"))
    #: Largest client WebSocket message; bigger ones close the socket with 1009.
    max_frame_bytes: int = 1024 * 1024
    #: Largest message content accepted by the API (``RTM_MAX_MESSAGE_BYTES``).
    max_message_bytes: int = 64 * 1024
    #: How long after sending a sender may edit or delete a message
    #: (``RTM_EDIT_WINDOW_SECONDS``; 0: never). Written to the database at start, which enforces
    #: it on every path (docs/api.md, "Editing and deleting").
    edit_window_seconds: int = 900
    #: A socket that sends nothing (not even a heartbeat) for this long is closed.
    idle_timeout: float = 60.0
    max_channels_per_connection: int = 100
    #: JSON depth, postgres_changes bindings, filter length, presence metadata size.
    input_limits: InputLimits = field(default_factory=InputLimits)
    max_joins_per_second: int = 50
    max_events_per_second: int = 1000
    #: Bytes queued for a client that is not reading before it is disconnected (1008).
    send_buffer_limit: int = 4 * 1024 * 1024
    #: How often live portal tokens are checked for revocation.
    token_check_interval: float = 2.0
    #: How long the change log keeps changes for clients that resume (``RTM_CHANGE_RETENTION``).
    change_retention_seconds: float = 24 * 3600.0
    #: Most changes a resuming channel is replayed (a customer's: of its own), and most
    #: database broadcasts: further behind, it is told its history is lost and reloads
    #: (``RTM_REPLAY_LIMIT``). The replay is read into memory; a day's log must not be, for one
    #: join.
    replay_limit: int = 10_000
    #: The change feed also polls this often, should a notification be missed.
    feed_poll_interval: float = 0.5
    #: A delivery still 'sent' this long after it was recorded becomes 'failed'
    #: (``RTM_DELIVERY_DEADLINE``).
    delivery_deadline_seconds: float = 24 * 3600.0
    #: Expired typing indicators are deleted this often.
    typing_cleanup_interval: float = 0.5
    #: Presence (docs/presence.md): idle this long, every connection of a participant: away
    #: (``RTM_PRESENCE_AWAY_AFTER``); no connection for this long: offline
    #: (``RTM_PRESENCE_GRACE``).
    presence_away_after: float = 300.0
    presence_grace: float = 10.0
    #: How often the presence rules run, and how often a process proves it is alive
    #: (``RTM_PROCESS_HEARTBEAT_INTERVAL``); a process silent for ``process_dead_after``
    #: (``RTM_PROCESS_DEAD_AFTER``) is dead and its participants' connections closed.
    presence_settle_interval: float = 1.0
    process_heartbeat_interval: float = 5.0
    process_dead_after: float = 15.0
    #: Rate limits, in the ``limits`` notation (``RTM_RATE_TYPING`` and so on).
    rate_typing: str = "10/minute"
    rate_presence: str = "6/minute"
    rate_read_receipts: str = "60/minute"
    rate_requests: str = "600/minute"
    #: Webhooks from the outbox (docs/webhooks.md).
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    #: Attachments (docs/files.md).
    files: FileSettings = field(default_factory=FileSettings)

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=_env("RTM_DATABASE_URL"),
            redis_url=_env("RTM_REDIS_URL"),
            broker=(_env("RTM_BROKER", "auto") or "auto").strip().lower(),
            jwt_secret=_env("RTM_JWT_SECRET"),
            graceful_timeout=float(_env("RTM_GRACEFUL_TIMEOUT", "30") or 0),
            tls_cert=_path(_env("RTM_TLS_CERT")),
            tls_key=_path(_env("RTM_TLS_KEY")),
            host=_env("RTM_HOST", "127.0.0.1") or "127.0.0.1",
            port=int(_env("RTM_PORT", "4000") or "4000"),
            public_url=_env("RTM_PUBLIC_URL"),
            trust_proxy_headers=_flag("RTM_TRUST_PROXY_HEADERS"),
            embed_origins=tuple((_env("RTM_EMBED_ORIGINS") or "").replace(",", " ").split()),
            cors_origins=tuple(
                o.rstrip("/") for o in (_env("RTM_CORS_ORIGINS") or "").replace(",", " ").split()
            ),
            data_dir=Path(_env("RTM_DATA_DIR", ".rtm") or ".rtm"),
            max_frame_bytes=int(_env("RTM_MAX_FRAME_BYTES", str(1024 * 1024)) or 0),
            max_message_bytes=int(_env("RTM_MAX_MESSAGE_BYTES", str(64 * 1024)) or 0),
            edit_window_seconds=int(_env("RTM_EDIT_WINDOW_SECONDS", "900") or 0),
            rate_typing=_env("RTM_RATE_TYPING", "10/minute") or "10/minute",
            rate_presence=_env("RTM_RATE_PRESENCE", "6/minute") or "6/minute",
            rate_read_receipts=_env("RTM_RATE_READ_RECEIPTS", "60/minute") or "60/minute",
            rate_requests=_env("RTM_RATE_REQUESTS", "600/minute") or "600/minute",
            delivery_deadline_seconds=float(_env("RTM_DELIVERY_DEADLINE", "86400") or 0),
            change_retention_seconds=float(_env("RTM_CHANGE_RETENTION", "86400") or 0),
            replay_limit=int(_env("RTM_REPLAY_LIMIT", "10000") or 0),
            presence_away_after=float(_env("RTM_PRESENCE_AWAY_AFTER", "300") or 0),
            presence_grace=float(_env("RTM_PRESENCE_GRACE", "10") or 0),
            process_heartbeat_interval=float(_env("RTM_PROCESS_HEARTBEAT_INTERVAL", "5") or 0),
            process_dead_after=float(_env("RTM_PROCESS_DEAD_AFTER", "15") or 0),
            max_channels_per_connection=int(_env("RTM_MAX_CHANNELS_PER_SOCKET", "100") or 0),
            input_limits=_input_limits(),
            files=FileSettings.from_env(),
            webhooks=WebhookSettings.from_env(),
        )

    @property
    def broker_kind(self) -> str:
        """The broker ``broker`` names, ``auto`` resolved; ValueError for an unknown one."""
        kind = self.broker
        if kind == "auto":
            return "redis" if self.redis_url else "postgres" if self.workers > 1 else "local"
        if kind not in ("local", "redis", "postgres"):
            raise ValueError(f"RTM_BROKER: expected auto, local, redis or postgres, not {kind!r}")
        if kind == "redis" and not self.redis_url:
            raise ValueError("RTM_BROKER=redis needs RTM_REDIS_URL")
        return kind

    def with_overrides(self, **changes: object) -> Settings:
        """Return a copy with the non-None ``changes`` applied (flags win over the environment)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]
