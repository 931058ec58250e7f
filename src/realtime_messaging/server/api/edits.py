"""Editing and deleting messages: ``PATCH`` and ``DELETE /api/messages/{message_id}``.

The rules (who, until when, tombstones) live in the database (migration 0014), so that the
/rest/v1 tables and plain SQL obey them too; these handlers call its functions as the caller and
turn its refusals into the API's errors (docs/api.md, "Editing and deleting").
"""

from __future__ import annotations

from typing import Any

import asyncpg
from pydantic import Field, field_validator

from ...store.caller import as_caller
from .errors import ApiError
from .framework import Api, Context, Model, envelope
from .messaging import MESSAGE, message_json

#: Longest edit window the server accepts (a year): past it a window is a typo, not a policy.
MAX_EDIT_WINDOW_SECONDS = 366 * 24 * 3600


class EditMessage(Model):
    """The new content; the same bounds as sending (the byte limit is checked in the handler)."""

    content: str = Field(min_length=1)

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("content must not be blank")
        return value


#: The trigger's named refusals: both are about the message's state, not the caller's rights,
#: so 409 (the same request could have succeeded earlier).
_CONFLICTS = {
    "customer_messages_edit_window": ("edit_window_closed", "the edit window has closed"),
    "customer_messages_deleted": ("message_deleted", "the message was deleted"),
}


def _refusal(exc: asyncpg.CheckViolationError) -> ApiError | None:
    found = _CONFLICTS.get(getattr(exc, "constraint_name", None) or "")
    if found is None:
        return None
    code, message = found
    return ApiError(409, code, message)


async def apply_edit_window(pool: asyncpg.Pool, seconds: int) -> None:
    """Store the configured window in the database, which enforces it on every path."""
    if not 0 <= seconds <= MAX_EDIT_WINDOW_SECONDS:
        raise ValueError(
            f"RTM_EDIT_WINDOW_SECONDS: expected 0 to {MAX_EDIT_WINDOW_SECONDS}, not {seconds}"
        )
    await pool.execute(
        "UPDATE rtm.message_rules SET edit_window = make_interval(secs => $1) "
        "WHERE edit_window <> make_interval(secs => $1)",
        float(seconds),
    )


def register(api: Api, *, max_message_bytes: int) -> None:
    """Add the edit and delete routes to ``api``."""

    @api.route(
        "PATCH",
        "/api/messages/{message_id}",
        summary="Edit one's own message within the edit window",
        body=EditMessage,
        response=envelope(MESSAGE),
        activity=True,
        tags=("messages",),
    )
    async def edit_message(ctx: Context, body: EditMessage) -> dict[str, Any]:
        message_id = ctx.uuid_param("message_id")
        if ctx.caller.user_id is None and ctx.caller.customer_id is None:
            raise ApiError(403, "forbidden", "messages are edited by their sender")
        if len(body.content.encode()) > max_message_bytes:
            raise ApiError(413, "payload_too_large", f"content is over {max_message_bytes} bytes")
        try:
            async with ctx.pool.acquire() as conn, as_caller(conn, ctx.caller):
                row = await conn.fetchrow(
                    "SELECT * FROM rtm.edit_message($1, $2)", message_id, body.content
                )
        except asyncpg.CheckViolationError as exc:
            refusal = _refusal(exc)
            if refusal is None:
                raise
            raise refusal from exc
        return message_json(row)

    @api.route(
        "DELETE",
        "/api/messages/{message_id}",
        summary="Delete a message, leaving a tombstone in its place (idempotent)",
        response=envelope(MESSAGE),
        activity=True,
        tags=("messages",),
    )
    async def delete_message(ctx: Context, _: None) -> dict[str, Any]:
        # Staff, customers and the service role (an administrator's back end) may ask; the
        # database decides whether this caller may delete this message.
        message_id = ctx.uuid_param("message_id")
        try:
            async with ctx.pool.acquire() as conn, as_caller(conn, ctx.caller):
                row = await conn.fetchrow("SELECT * FROM rtm.delete_message($1)", message_id)
        except asyncpg.CheckViolationError as exc:
            refusal = _refusal(exc)
            if refusal is None:
                raise
            raise refusal from exc
        return message_json(row)
