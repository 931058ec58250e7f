"""The staff inbox's queues: the conversation list with its filters (status, assignee, unread),
ordered by last activity, and the count per filter. Queries run as the caller, so row-level
security decides which conversations are counted and listed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from pydantic import Field, field_validator

from ...store.caller import Caller, as_caller
from .errors import ApiError
from .framework import Api, Context, Model, envelope, json_object
from .messaging import CONVERSATION_ENTRY, conversation_entry_json, decode_cursor, encode_cursor

Status = Literal["open", "pending", "resolved", "closed"]
STATUSES: tuple[Status, ...] = ("open", "pending", "resolved", "closed")

#: Last activity: the later of the latest message's time (kept by migration 0015 beside the
#: counters) and the conversation's own updated_at (status, assignment, subject; at first its
#: creation time).
ACTIVITY = "greatest(c.updated_at, cc.last_message_at)"


class ConversationQuery(Model):
    """``GET /api/conversations``: a page of the caller's conversations, newest activity first."""

    limit: int = Field(default=50, ge=1, le=200)
    before: str | None = Field(default=None, max_length=200)
    status: Status | None = None
    #: A staff user's id, ``mine`` (the calling staff user) or ``unassigned``.
    assignee: str | None = Field(default=None, max_length=36)
    #: true: only conversations with a message the caller has not read; false: only without.
    unread: bool | None = None

    @field_validator("assignee")
    @classmethod
    def _assignee(cls, value: str | None) -> str | None:
        if value is None or value in ("mine", "unassigned"):
            return value
        try:
            return str(UUID(value))
        except ValueError:
            raise ValueError("a staff user id, 'mine' or 'unassigned'") from None


class CountsQuery(Model):
    #: The status that the mine/unassigned/unread/all counts are taken in.
    status: Status = "open"


@dataclass
class _Where:
    """SQL conditions with their arguments, numbered as they are added."""

    args: list[Any] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)
    #: LEFT JOINs that conditions need (the staff user's read counters).
    extra_joins: list[str] = field(default_factory=list)

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, condition: str) -> None:
        self.conditions.append(condition)

    def joins(self) -> str:
        return " ".join(self.extra_joins)

    def sql(self) -> str:
        return " AND ".join(self.conditions) if self.conditions else "true"


def _unread_condition(caller: Caller, where: _Where) -> str:
    """The condition "this conversation has a message the caller has not read"."""
    if caller.user_id is not None:
        # The counters of 0012: customer messages minus this user's receipts there.
        me = where.arg(caller.user_id)
        where.extra_joins.append(
            f"LEFT JOIN rtm.staff_read_counters s ON s.user_id = {me} AND s.conversation_id = c.id"
        )
        return "coalesce(cc.customer_messages, 0) > coalesce(s.receipts, 0)"
    if caller.customer_id is not None:
        # Staff messages (the counters of 0001) minus the customer's receipts there: each of
        # their receipts is on a staff message of their own conversation, one per message.
        me = where.arg(caller.customer_id)
        return (
            "coalesce(cc.staff_messages, 0) > (SELECT count(*) FROM "
            "public.message_read_receipts r WHERE r.conversation_id = c.id "
            f"AND r.read_by_customer_id = {me})"
        )
    raise ApiError(422, "validation_error", "unread: needs a staff token or a portal token")


def _my_user_id(caller: Caller) -> UUID:
    if caller.user_id is None:
        raise ApiError(422, "validation_error", "assignee: 'mine' needs a staff token")
    return caller.user_id


_LIST_ENTRY = """
SELECT c.*, p.activity, cu.name AS customer_name, lm.id AS last_id, lm.content AS last_content,
       lm.sender_type AS last_sender_type, lm.sender_id AS last_sender_id,
       lm.created_at AS last_created_at, lm.deleted_at AS last_deleted_at,
       lm.attachments AS last_attachments
FROM page p
JOIN public.conversations c ON c.id = p.id
LEFT JOIN public.customers cu ON cu.id = c.customer_id
LEFT JOIN LATERAL (
    SELECT m.id, m.content, m.sender_type, m.sender_id, m.created_at, m.deleted_at, m.attachments
    FROM public.customer_messages m WHERE m.conversation_id = c.id
    ORDER BY m.created_at DESC, m.id DESC LIMIT 1
) lm ON true
ORDER BY p.activity DESC, p.id DESC
"""


def list_sql(caller: Caller, query: ConversationQuery) -> tuple[str, list[Any]]:
    """The list's query and its arguments (also what benchmarks/search times)."""
    where = _Where()
    # A literal, not a parameter: the plan of a statement the driver has prepared is then
    # made for this size (a generic plan, guessing, sorted every conversation).
    limit = str(int(query.limit) + 1)
    if query.status is not None:
        where.add(f"c.status = {where.arg(query.status)}")
    if query.assignee == "unassigned":
        where.add("c.assigned_user_id IS NULL")
    elif query.assignee == "mine":
        where.add(f"c.assigned_user_id = {where.arg(_my_user_id(caller))}")
    elif query.assignee is not None:
        where.add(f"c.assigned_user_id = {where.arg(UUID(query.assignee))}")
    if query.unread is not None:
        unread = _unread_condition(caller, where)
        where.add(unread if query.unread else f"NOT ({unread})")
    if query.before:
        activity, row_id = decode_cursor(query.before)
        after, after_id = where.arg(activity), where.arg(row_id)
        where.add(f"({ACTIVITY}, c.id) < ({after}, {after_id})")
    rows = (
        "FROM public.conversations c "
        f"LEFT JOIN rtm.conversation_counters cc ON cc.conversation_id = c.id {where.joins()} "
        f"WHERE {where.sql()}"
    )
    # Last activity is the later of two times, each with an index (0015). The first `limit`
    # conversations by the later one are among the first `limit` by one time or by the other
    # (a conversation ranked above one whose activity is its message time has a later message
    # time too, or the same and a larger id; alike for updated_at), so the page is cut from two
    # index walks of `limit` rows each, not from a sort of every conversation. Then the entry of
    # each row shown: the customer's name and the latest message.
    entries = f"ORDER BY activity DESC, c.id DESC LIMIT {limit}) {_LIST_ENTRY}"
    if caller.customer_id is not None:
        # A customer's few conversations (their index): sorting them all is cheapest.
        sql = f"WITH page AS (SELECT c.id, {ACTIVITY} AS activity {rows} {entries}"
        return sql, where.args
    by_message = "cc.last_message_at IS NOT NULL"
    by_update = "true"
    if query.before:
        by_message += f" AND cc.last_message_at <= {after}"
        by_update = f"c.updated_at <= {after}"
    sql = (
        f"WITH candidates AS ((SELECT c.id {rows} AND {by_message} "
        f"ORDER BY cc.last_message_at DESC, c.id DESC LIMIT {limit}) UNION "
        f"(SELECT c.id {rows} AND {by_update} ORDER BY c.updated_at DESC, c.id DESC "
        f"LIMIT {limit})), "
        f"page AS (SELECT c.id, {ACTIVITY} AS activity FROM candidates k "
        "JOIN public.conversations c ON c.id = k.id "
        f"LEFT JOIN rtm.conversation_counters cc ON cc.conversation_id = c.id {entries}"
    )
    return sql, where.args


def counts_sql(caller: Caller, status: Status) -> tuple[str, list[Any]]:
    """The counts' query and its arguments: one pass over the caller's conversations."""
    where = _Where()
    in_status = where.arg(status)
    staff = caller.user_id is not None
    mine = f"c.assigned_user_id = {where.arg(caller.user_id)}" if staff else "false"
    reader = caller.user_id is not None or caller.customer_id is not None
    unread = _unread_condition(caller, where) if reader else "false"
    by_status = ", ".join(
        f"count(*) FILTER (WHERE c.status = '{s}') AS status_{s}" for s in STATUSES
    )
    sql = (
        f"SELECT count(*) FILTER (WHERE c.status = {in_status}) AS n_all, "
        f"count(*) FILTER (WHERE c.status = {in_status} AND {mine}) AS mine, "
        f"count(*) FILTER (WHERE c.status = {in_status} AND c.assigned_user_id IS NULL) "
        "AS unassigned, "
        f"count(*) FILTER (WHERE c.status = {in_status} AND {unread}) AS unread, {by_status} "
        "FROM public.conversations c "
        f"LEFT JOIN rtm.conversation_counters cc ON cc.conversation_id = c.id {where.joins()}"
    )
    return sql, where.args


def register(api: Api) -> None:
    """Add ``GET /api/conversations`` and ``GET /api/conversations/counts`` to ``api`` (before
    the routes with a conversation id in the path, which would take "counts" for one)."""

    @api.route(
        "GET",
        "/api/conversations",
        summary="Conversations the caller can see, by last activity, filtered by status, "
        "assignee (a user id, mine, unassigned) and unread",
        query=ConversationQuery,
        response=envelope(
            json_object(
                conversations={"type": "array", "items": CONVERSATION_ENTRY},
                nextCursor={"type": ["string", "null"]},
            )
        ),
        tags=("conversations",),
    )
    async def list_conversations(ctx: Context, query: ConversationQuery) -> dict[str, Any]:
        sql, args = list_sql(ctx.caller, query)
        async with ctx.pool.acquire() as conn, as_caller(conn, ctx.caller):
            rows = await conn.fetch(sql, *args)
        page = rows[: query.limit]
        cursor = None
        if len(rows) > query.limit:
            cursor = encode_cursor(page[-1]["activity"], page[-1]["id"])
        return {
            "conversations": [conversation_entry_json(r) for r in page],
            "nextCursor": cursor,
        }

    @api.route(
        "GET",
        "/api/conversations/counts",
        summary="How many conversations each inbox filter holds (all, mine, unassigned, unread "
        "in one status; and per status)",
        query=CountsQuery,
        response=envelope(_COUNTS),
        tags=("conversations",),
    )
    async def conversation_counts(ctx: Context, query: CountsQuery) -> dict[str, Any]:
        sql, args = counts_sql(ctx.caller, query.status)
        staff = ctx.caller.user_id is not None
        reader = staff or ctx.caller.customer_id is not None
        async with ctx.pool.acquire() as conn, as_caller(conn, ctx.caller):
            row = await conn.fetchrow(sql, *args)
        assert row is not None  # an aggregate without GROUP BY: always one row
        return {
            "status": query.status,
            "all": row["n_all"],
            "mine": row["mine"] if staff else None,
            "unassigned": row["unassigned"],
            "unread": row["unread"] if reader else None,
            "byStatus": {s: row[f"status_{s}"] for s in STATUSES},
        }


_COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
_COUNT_OR_NULL: dict[str, Any] = {"anyOf": [_COUNT, {"type": "null"}]}
_COUNTS = json_object(
    status={"enum": list(STATUSES)},
    all=_COUNT,
    mine=_COUNT_OR_NULL,
    unassigned=_COUNT,
    unread=_COUNT_OR_NULL,
    byStatus=json_object(**{s: _COUNT for s in STATUSES}),
)
