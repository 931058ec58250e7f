"""The ``phx_join`` payload: channel configuration, postgres_changes bindings, access token.

Every part of ``config`` may be missing or null (realtime-py sends ``"broadcast": null``), booleans
may arrive as ``"true"``/``"false"`` strings, and unknown keys are ignored, as the real server does.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..domain.bounds import DEFAULT_LIMITS, InputLimits
from .errors import ProtocolError

#: Events a postgres_changes binding may name.
PG_EVENTS = frozenset({"*", "INSERT", "UPDATE", "DELETE"})


class JoinError(ProtocolError):
    """A join that must be refused; ``reason`` is the ``"<Code>: <message>"`` the clients show."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.reason = f"{code}: {message}"


@dataclass(frozen=True, slots=True)
class PostgresBinding:
    """One ``postgres_changes`` entry of a join, with the id the reply gives it.

    ``raw`` is the client's map, echoed verbatim (plus ``id``) in the join reply: both official
    clients compare the echo to what they sent, position by position.
    """

    event: str
    schema: str
    table: str | None
    filter: str | None
    raw: dict[str, Any]
    id: int

    def reply_entry(self) -> dict[str, Any]:
        return {**self.raw, "id": self.id}


@dataclass(frozen=True, slots=True)
class JoinConfig:
    broadcast_self: bool = False
    broadcast_ack: bool = False
    presence_key: str = ""
    presence_enabled: bool = False
    private: bool = False
    postgres_changes: tuple[PostgresBinding, ...] = field(default_factory=tuple)
    #: Our extension: ``config.resume.position``, the last change position the client saw.
    resume_position: int | None = None


def binding_id(event: str, schema: str, table: str | None, filter_: str | None) -> int:
    """A stable, non-zero id derived from the binding itself (same on every process).

    Identical subscriptions get identical ids, so one encoded change can serve all of them.
    Kept below 2**27 like Supabase's ``phash2`` ids, so it is a small JSON integer everywhere.
    """
    canonical = orjson.dumps([event, schema, table, filter_])
    return (zlib.crc32(canonical) & 0x7FFFFFF) or 1


def _flag(value: Any, name: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return bool(value == "true")
    raise JoinError("InvalidJoinPayload", f"{name} must be a boolean")


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise JoinError("InvalidJoinPayload", f"config.{name} must be an object")
    return value


def _optional_str(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise JoinError("InvalidJoinPayload", f"{name} must be a string")
    return value


def parse_binding(raw: Any, limits: InputLimits = DEFAULT_LIMITS) -> PostgresBinding:
    if not isinstance(raw, dict):
        raise JoinError("InvalidJoinPayload", "each postgres_changes entry must be an object")
    event = raw.get("event")
    if not isinstance(event, str) or event.upper() not in PG_EVENTS:
        raise JoinError(
            "InvalidJoinPayload", "postgres_changes event must be one of *, INSERT, UPDATE, DELETE"
        )
    schema = _optional_str(raw.get("schema"), "postgres_changes schema") or "public"
    table = _optional_str(raw.get("table"), "postgres_changes table")
    filter_ = _optional_str(raw.get("filter"), "postgres_changes filter")
    if filter_ is not None and len(filter_) > limits.max_filter_length:
        raise JoinError(
            "InvalidJoinPayload",
            f"a postgres_changes filter is longer than {limits.max_filter_length} characters",
        )
    event = event.upper()
    return PostgresBinding(
        event, schema, table, filter_, raw, binding_id(event, schema, table, filter_)
    )


def parse_join_payload(
    payload: Any, limits: InputLimits = DEFAULT_LIMITS
) -> tuple[JoinConfig, str | None]:
    """Return the channel configuration and the access token the join carries (if any)."""
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise JoinError("InvalidJoinPayload", "the join payload must be an object")
    token = payload.get("access_token", payload.get("user_token"))
    if token is not None and not isinstance(token, str):
        raise JoinError("InvalidJoinPayload", "access_token must be a string")
    config = payload.get("config")
    if config is None:
        return JoinConfig(), token or None
    if not isinstance(config, dict):
        raise JoinError("InvalidJoinPayload", "config must be an object")
    broadcast = _section(config, "broadcast")
    presence = _section(config, "presence")
    key = presence.get("key")
    if key is None:
        key = ""
    if not isinstance(key, str):
        key = str(key) if isinstance(key, int | float) and not isinstance(key, bool) else None
        if key is None:
            raise JoinError("InvalidJoinPayload", "presence key must be a string")
    bindings_raw = config.get("postgres_changes")
    if bindings_raw is None:
        bindings_raw = []
    if not isinstance(bindings_raw, list):
        raise JoinError("InvalidJoinPayload", "postgres_changes must be a list")
    if len(bindings_raw) > limits.max_bindings_per_join:
        raise JoinError(
            "TooManyBindings",
            f"at most {limits.max_bindings_per_join} postgres_changes bindings per join",
        )
    return (
        JoinConfig(
            resume_position=_resume_position(_resume_of(payload, config)),
            broadcast_self=_flag(broadcast.get("self"), "broadcast.self"),
            broadcast_ack=_flag(broadcast.get("ack"), "broadcast.ack"),
            presence_key=key,
            presence_enabled=_flag(presence.get("enabled"), "presence.enabled"),
            private=_flag(config.get("private"), "private"),
            postgres_changes=tuple(parse_binding(b, limits) for b in bindings_raw),
        ),
        token or None,
    )


def _resume_of(payload: dict[str, Any], config: dict[str, Any]) -> Any:
    """Where a join may carry ``{"position": N}``: ``config.resume`` (the project's SDK),
    ``config.postgres_changes_options.resume`` (realtime-js passes that object through) or a
    top-level ``resume`` (realtime-py passes unknown top-level keys through). The official
    clients rebuild ``config`` from the keys they know, so ``config.resume`` never reaches us
    from them."""
    if config.get("resume") is not None:
        return config["resume"]
    options = config.get("postgres_changes_options")
    if isinstance(options, dict) and options.get("resume") is not None:
        return options["resume"]
    return payload.get("resume")


def _resume_position(value: Any) -> int | None:
    """``{"position": N}`` (N an integer or its decimal string, >= 0), or nothing."""
    if value is None:
        return None
    position = value.get("position") if isinstance(value, dict) else None
    if isinstance(position, str) and position.isdigit():
        position = int(position)
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise JoinError("InvalidJoinPayload", "resume.position must be a non-negative integer")
    return position
