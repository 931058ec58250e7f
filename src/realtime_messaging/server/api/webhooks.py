"""Service-role endpoints for webhook subscriptions: register, list with their health, change
(pause and resume included), delete, and each one's delivery attempts (docs/webhooks.md)."""

from __future__ import annotations

import re
import secrets
from typing import Any, Literal, get_args

import asyncpg
from pydantic import Field, StrictBool

from ...config import WebhookSettings
from ..webhooks import check_url, pause, resume
from .errors import ApiError
from .framework import (
    TIME_SCHEMA,
    UUID_SCHEMA,
    Api,
    Context,
    Model,
    envelope,
    json_object,
    not_found,
)

#: Subscriptions a database may hold: bounds the worker's fan-out per event and the labels of
#: the per-endpoint metric.
MAX_WEBHOOKS = 100
MAX_URL_LENGTH = 2048

Event = Literal[
    "message.created",
    "message.updated",
    "message.deleted",
    "delivery.failed",
    "conversation.assigned",
    "conversation.closed",
]
_CURSOR = re.compile(r"[0-9]{1,18}")
# Any fixed 64-bit key: registrations serialise on it so that the cap holds under concurrency.
_REGISTER_LOCK_KEY = 0x52544D5F57484B53  # "RTM_WHKS"


class NewWebhook(Model):
    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH)
    events: list[Event] = Field(min_length=1, max_length=6)
    #: Signs every delivery (docs/webhooks.md); generated (and shown once) when left out.
    secret: str | None = Field(default=None, pattern=r"^[\x21-\x7e]{16,256}$")


class WebhookChanges(Model):
    """Any of a subscription's settings, with the bounds of :class:`NewWebhook`; ``active``
    false pauses it (its events wait), true resumes it."""

    url: str | None = Field(default=None, min_length=1, max_length=MAX_URL_LENGTH)
    events: list[Event] | None = Field(default=None, min_length=1, max_length=6)
    secret: str | None = Field(default=None, pattern=r"^[\x21-\x7e]{16,256}$")
    active: StrictBool | None = None


class AttemptsQuery(Model):
    limit: int = Field(default=50, ge=1, le=200)
    #: The ``nextCursor`` of the previous page.
    before: str | None = Field(default=None, max_length=18)


_NULLABLE_TIME: dict[str, Any] = {"anyOf": [TIME_SCHEMA, {"type": "null"}]}
_EVENTS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string", "enum": list(get_args(Event))},
}
_WEBHOOK = json_object(
    id=UUID_SCHEMA,
    url={"type": "string"},
    events=_EVENTS_SCHEMA,
    active={"type": "boolean"},
    createdAt=TIME_SCHEMA,
    consecutiveFailures={"type": "integer"},
    lastError={"type": ["string", "null"]},
    lastFailureAt=_NULLABLE_TIME,
    lastSuccessAt=_NULLABLE_TIME,
    pending={"type": "integer"},
)
_CREATED = json_object(
    id=UUID_SCHEMA,
    url={"type": "string"},
    events=_EVENTS_SCHEMA,
    active={"type": "boolean"},
    createdAt=TIME_SCHEMA,
    secret={"type": "string"},
)
_ATTEMPT = json_object(
    id={"type": "string"},
    eventId=UUID_SCHEMA,
    eventType={"type": "string"},
    attempt={"type": "integer"},
    statusCode={"type": ["integer", "null"]},
    error={"type": ["string", "null"]},
    durationMs={"type": "number"},
    at=TIME_SCHEMA,
)


def _time(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


def _webhook(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "url": row["url"],
        "events": list(row["events"]),
        "active": row["active"],
        "createdAt": row["created_at"].isoformat(),
        "consecutiveFailures": row["consecutive_failures"],
        "lastError": row["last_error"],
        "lastFailureAt": _time(row["last_failure_at"]),
        "lastSuccessAt": _time(row["last_success_at"]),
        "pending": row["pending"],
    }


_WITH_PENDING = (
    "SELECT w.*, (SELECT count(*) FROM rtm.webhook_outbox AS o WHERE o.webhook_id = w.id "
    "AND o.delivered_at IS NULL AND o.dead_at IS NULL) AS pending "
    "FROM rtm.webhooks AS w"
)


def register(api: Api, settings: WebhookSettings) -> None:
    @api.route(
        "POST",
        "/api/admin/webhooks",
        summary="Subscribe a URL to events (signed with the secret; docs/webhooks.md)",
        auth="service",
        body=NewWebhook,
        response=envelope(_CREATED),
        status=201,
        tags=("admin", "webhooks"),
    )
    async def create_webhook(ctx: Context, body: NewWebhook) -> dict[str, Any]:
        refused = check_url(body.url, allow_private=settings.allow_private)
        if refused is not None:
            raise ApiError(422, "validation_error", f"url: {refused}")
        secret = body.secret or "whsec_" + secrets.token_urlsafe(32)
        events = sorted(set(body.events))
        async with ctx.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _REGISTER_LOCK_KEY)
            if await conn.fetchval("SELECT count(*) FROM rtm.webhooks") >= MAX_WEBHOOKS:
                raise ApiError(
                    409, "limit_reached", f"at most {MAX_WEBHOOKS} webhooks; delete one first"
                )
            row = await conn.fetchrow(
                "INSERT INTO rtm.webhooks (url, events, secret) VALUES ($1, $2, $3) "
                "RETURNING id, url, events, active, created_at",
                body.url,
                events,
                secret,
            )
        return {
            "id": str(row["id"]),
            "url": row["url"],
            "events": list(row["events"]),
            "active": row["active"],
            "createdAt": row["created_at"].isoformat(),
            "secret": secret,
        }

    @api.route(
        "GET",
        "/api/admin/webhooks",
        summary="List webhooks with their health: consecutive failures, last error, pending",
        auth="service",
        response=envelope(json_object(webhooks={"type": "array", "items": _WEBHOOK})),
        tags=("admin", "webhooks"),
    )
    async def list_webhooks(ctx: Context, _: None) -> dict[str, Any]:
        rows = await ctx.pool.fetch(_WITH_PENDING + " ORDER BY w.created_at, w.id")
        return {"webhooks": [_webhook(r) for r in rows]}

    @api.route(
        "PATCH",
        "/api/admin/webhooks/{webhook_id}",
        summary=(
            "Change a webhook's url, events or secret, or pause (active: false) and resume it; "
            "its pending events and attempts stay"
        ),
        auth="service",
        body=WebhookChanges,
        response=envelope(_WEBHOOK),
        tags=("admin", "webhooks"),
    )
    async def update_webhook(ctx: Context, body: WebhookChanges) -> dict[str, Any]:
        webhook_id = ctx.uuid_param("webhook_id")
        given = body.model_fields_set
        for name in sorted(given):
            if getattr(body, name) is None:
                raise ApiError(422, "validation_error", f"{name}: may not be null")
        if not given:
            raise ApiError(
                422, "validation_error", "nothing to change: give url, events, secret or active"
            )
        if body.url is not None:
            refused = check_url(body.url, allow_private=settings.allow_private)
            if refused is not None:
                raise ApiError(422, "validation_error", f"url: {refused}")
        events = sorted(set(body.events)) if body.events is not None else None
        async with ctx.pool.acquire() as conn, conn.transaction():
            was = await conn.fetchval(
                "SELECT active FROM rtm.webhooks WHERE id = $1 FOR UPDATE", webhook_id
            )
            if was is None:
                raise not_found("webhook not found")
            await conn.execute(
                "UPDATE rtm.webhooks SET url = coalesce($2, url), events = coalesce($3, events), "
                "secret = coalesce($4, secret), active = coalesce($5, active) WHERE id = $1",
                webhook_id,
                body.url,
                events,
                body.secret,
                body.active,
            )
            if body.active is not None and body.active != was:
                await (resume if body.active else pause)(conn, webhook_id)
            row = await conn.fetchrow(_WITH_PENDING + " WHERE w.id = $1", webhook_id)
        return _webhook(row)

    @api.route(
        "DELETE",
        "/api/admin/webhooks/{webhook_id}",
        summary="Delete a webhook with its pending events and attempts",
        auth="service",
        response=envelope(json_object(id=UUID_SCHEMA)),
        tags=("admin", "webhooks"),
    )
    async def delete_webhook(ctx: Context, _: None) -> dict[str, Any]:
        webhook_id = ctx.uuid_param("webhook_id")
        async with ctx.pool.acquire() as conn, conn.transaction():
            # The worker locks outbox rows, then the subscription's row: take them in that order
            # too, waiting for a round in flight to end rather than deadlocking with it (a round
            # that claims an event written meanwhile still can: a 409 retry, rarely).
            await conn.execute(
                "SELECT 1 FROM rtm.webhook_outbox WHERE webhook_id = $1 "
                "AND delivered_at IS NULL AND dead_at IS NULL FOR UPDATE",
                webhook_id,
            )
            deleted = await conn.fetchval(
                "DELETE FROM rtm.webhooks WHERE id = $1 RETURNING id", webhook_id
            )
        if deleted is None:
            raise not_found("webhook not found")
        return {"id": str(webhook_id)}

    @api.route(
        "GET",
        "/api/admin/webhooks/{webhook_id}/attempts",
        summary="A webhook's delivery attempts, newest first, by cursor",
        auth="service",
        query=AttemptsQuery,
        response=envelope(
            json_object(
                attempts={"type": "array", "items": _ATTEMPT},
                nextCursor={"type": ["string", "null"]},
            )
        ),
        tags=("admin", "webhooks"),
    )
    async def list_webhook_attempts(ctx: Context, query: AttemptsQuery) -> dict[str, Any]:
        webhook_id = ctx.uuid_param("webhook_id")
        before = 2**63 - 1
        if query.before is not None:
            if not _CURSOR.fullmatch(query.before):
                raise ApiError(422, "validation_error", "before: not a cursor this API returned")
            before = int(query.before)
        async with ctx.pool.acquire() as conn:
            if await conn.fetchval("SELECT 1 FROM rtm.webhooks WHERE id = $1", webhook_id) is None:
                raise not_found("webhook not found")
            rows = await conn.fetch(
                "SELECT * FROM rtm.webhook_attempts WHERE webhook_id = $1 AND id < $2 "
                "ORDER BY id DESC LIMIT $3",
                webhook_id,
                before,
                query.limit + 1,
            )
        page = rows[: query.limit]
        more = len(rows) > query.limit
        return {
            "attempts": [
                {
                    "id": str(r["id"]),
                    "eventId": str(r["event_id"]),
                    "eventType": r["event_type"],
                    "attempt": r["attempt"],
                    "statusCode": r["status_code"],
                    "error": r["error"],
                    "durationMs": r["duration_ms"],
                    "at": r["at"].isoformat(),
                }
                for r in page
            ],
            "nextCursor": str(page[-1]["id"]) if more else None,
        }
