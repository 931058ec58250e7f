"""Full-text search over the messages the caller may see: PostgreSQL text search on the stored
words of migration 0018, ranked, with highlighted snippets, paged by an opaque cursor. The query runs
as the caller, so row-level security decides which messages can be found."""

from __future__ import annotations

import base64
import html
import math
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import Field, field_validator

from ...store.caller import as_caller
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

#: Longest search text accepted, in characters.
MAX_QUERY_CHARS = 200
MAX_LIMIT = 50
#: How many of the newest matches are ranked (rtm.search_messages, 0018): ranking costs a step
#: per candidate, so this bounds a search for a word found in most messages.
CANDIDATES = 500
#: How long one search may run (statement_timeout) before it is refused as too broad.
SEARCH_TIMEOUT_MS = 3000
#: The text search configuration of the stored words (0018). Queries must name the same one, or
#: they look for words spelled differently.
CONFIG = "simple"
#: Private-use characters that ts_headline puts around a match. They are taken out of the
#: content first, so only PostgreSQL's own markers remain; after HTML escaping they become
#: <mark> and </mark>, so a snippet is safe HTML whatever the message said.
START, STOP = "\ue000", "\ue001"
HEADLINE_OPTIONS = (
    f'StartSel="{START}", StopSel="{STOP}", MaxWords=30, MinWords=12, MaxFragments=2, '
    'FragmentDelimiter=" … "'
)

_QUERY = f"websearch_to_tsquery('{CONFIG}'::regconfig, $1)"


class SearchQuery(Model):
    q: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    conversation_id: UUID | None = None
    limit: int = Field(default=20, ge=1, le=MAX_LIMIT)
    cursor: str | None = Field(default=None, max_length=300)

    @field_validator("q")
    @classmethod
    def _text(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        if not value.strip():
            raise ValueError("must not be blank")
        return value


def snippet_html(headline: str) -> str:
    """ts_headline's output as HTML: everything escaped, the matches in <mark>."""
    return html.escape(headline, quote=True).replace(START, "<mark>").replace(STOP, "</mark>")


def _encode_cursor(rank: float, created_at: datetime, row_id: UUID) -> str:
    raw = f"{rank!r}|{created_at.isoformat()}|{row_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[float, datetime, UUID]:
    try:
        rank_text, created, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        rank = float(rank_text)
        if not math.isfinite(rank) or abs(rank) > 1e30:
            raise ValueError("not a rank")
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("no time zone")
        return rank, when.astimezone(UTC), UUID(row_id)
    except (ValueError, OverflowError, UnicodeDecodeError) as exc:
        raise ApiError(422, "validation_error", "cursor: not a cursor this API returned") from exc


_RESULT = json_object(
    messageId=UUID_SCHEMA,
    conversationId=UUID_SCHEMA,
    senderType={"enum": ["customer", "staff"]},
    senderId=UUID_SCHEMA,
    createdAt=TIME_SCHEMA,
    rank={"type": "number"},
    snippet={"type": "string"},
)


def search_sql(query: SearchQuery) -> tuple[str, list[Any]]:
    """The search's query and its arguments (also what benchmarks/search times)."""
    after: tuple[float | None, datetime | None, UUID | None] = (None, None, None)
    if query.cursor:
        after = _decode_cursor(query.cursor)
    conversations = [query.conversation_id] if query.conversation_id is not None else None
    args: list[Any] = [
        query.q,
        query.limit + 1,
        HEADLINE_OPTIONS,
        conversations,
        *after,
        CANDIDATES,
    ]
    # rtm.search_messages (0018) finds, ranks and cuts the page (the text index is usable there,
    # not under row rules); the join back to customer_messages runs as the caller, so row-level
    # security decides what is shown. Content is read and highlighted for the page only.
    sql = f"""
        SELECT p.rank, m.id, m.conversation_id, m.sender_type, m.sender_id, m.created_at,
               ts_headline('{CONFIG}'::regconfig,
                           translate(m.content, '{START}{STOP}', ''), {_QUERY}, $3)
                   AS headline
        FROM rtm.search_messages({_QUERY}, $4::uuid[], $5::real, $6::timestamptz, $7::uuid, $2, $8)
             AS p
        JOIN public.customer_messages m ON m.id = p.id
        ORDER BY p.rank DESC, p.created_at DESC, p.id DESC
    """
    return sql, args


def register(api: Api) -> None:
    """Add ``GET /api/search`` to ``api``."""

    @api.route(
        "GET",
        "/api/search",
        summary="Search the messages the caller can see (ranked, with highlighted snippets)",
        query=SearchQuery,
        response=envelope(
            json_object(
                results={"type": "array", "items": _RESULT},
                nextCursor={"type": ["string", "null"]},
            )
        ),
        tags=("search",),
    )
    async def search(ctx: Context, query: SearchQuery) -> dict[str, Any]:
        sql, args = search_sql(query)
        async with ctx.pool.acquire() as conn, as_caller(conn, ctx.caller):
            if query.conversation_id is not None:
                visible = await conn.fetchval(
                    "SELECT 1 FROM public.conversations WHERE id = $1", query.conversation_id
                )
                if visible is None:
                    raise not_found("conversation not found")
            # A word in most messages makes every match a candidate for ranking: bounded.
            await conn.execute(
                "SELECT set_config('statement_timeout', $1, true)", str(SEARCH_TIMEOUT_MS)
            )
            try:
                rows = await conn.fetch(sql, *args)
            except asyncpg.QueryCanceledError as exc:
                raise ApiError(
                    422,
                    "validation_error",
                    "q: matches too many messages to rank in time; add words or a conversationId",
                ) from exc
        page = rows[: query.limit]
        cursor = None
        if len(rows) > query.limit:
            last = page[-1]
            cursor = _encode_cursor(last["rank"], last["created_at"], last["id"])
        return {
            "results": [
                {
                    "messageId": str(r["id"]),
                    "conversationId": str(r["conversation_id"]),
                    "senderType": r["sender_type"],
                    "senderId": str(r["sender_id"]),
                    "createdAt": r["created_at"].isoformat(),
                    "rank": r["rank"],
                    "snippet": snippet_html(r["headline"]),
                }
                for r in page
            ],
            "nextCursor": cursor,
        }
