"""Conversations, messages, read receipts, delivery acknowledgements, typing, presence, unread
counts, and the documented subscription endpoint. Every query runs as the caller, so row-level
security decides what each caller sees and may write."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg
import orjson
from aiohttp import web
from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ...domain.bounds import metadata_problem
from ...store.caller import as_caller
from ..http import ok
from ..public_url import PublicUrl
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

MAX_BATCH = 500
MAX_ATTACHMENTS = 10


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def conversation_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "customerId": str(row["customer_id"]),
        "subject": row["subject"],
        "status": row["status"],
        "assignedUserId": str(row["assigned_user_id"]) if row["assigned_user_id"] else None,
        "createdAt": _iso(row["created_at"]),
        "updatedAt": _iso(row["updated_at"]),
    }


#: A conversation with its customer's name and its latest message, for a list of them (one
#: query: a client that draws an inbox need not ask once per conversation).
_CONVERSATION_ENTRY = """
SELECT c.*, cu.name AS customer_name, lm.id AS last_id, lm.content AS last_content,
       lm.sender_type AS last_sender_type, lm.sender_id AS last_sender_id,
       lm.created_at AS last_created_at, lm.deleted_at AS last_deleted_at,
       lm.attachments AS last_attachments
FROM public.conversations c
LEFT JOIN public.customers cu ON cu.id = c.customer_id
LEFT JOIN LATERAL (
    SELECT m.id, m.content, m.sender_type, m.sender_id, m.created_at, m.deleted_at, m.attachments
    FROM public.customer_messages m WHERE m.conversation_id = c.id
    ORDER BY m.created_at DESC, m.id DESC LIMIT 1
) lm ON true
"""


def conversation_entry_json(row: asyncpg.Record) -> dict[str, Any]:
    last = None
    if row["last_id"] is not None:
        attachments = row["last_attachments"]
        last = {
            "id": str(row["last_id"]),
            "content": row["last_content"],
            "senderType": row["last_sender_type"],
            "senderId": str(row["last_sender_id"]),
            "createdAt": _iso(row["last_created_at"]),
            # So that a list can say "deleted" or "a file" for a message with no text.
            "deletedAt": _iso(row["last_deleted_at"]),
            "attachments": (
                orjson.loads(attachments) if isinstance(attachments, str) else attachments
            ),
        }
    return {**conversation_json(row), "customerName": row["customer_name"], "lastMessage": last}


def message_json(row: asyncpg.Record) -> dict[str, Any]:
    """The documented MessageEvent fields, plus the client message id."""
    attachments = row["attachments"]
    return {
        "id": str(row["id"]),
        "conversationId": str(row["conversation_id"]),
        "content": row["content"],
        "senderType": row["sender_type"],
        "senderId": str(row["sender_id"]),
        "createdAt": _iso(row["created_at"]),
        "attachments": orjson.loads(attachments) if isinstance(attachments, str) else attachments,
        "clientMessageId": row["client_message_id"],
        # .get: a query that names its columns (rather than m.*) may leave these out.
        "editedAt": _iso(row.get("edited_at")),
        "deletedAt": _iso(row.get("deleted_at")),
    }


def _encode_cursor(created_at: datetime, row_id: UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        created, _, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("no time zone")
        # In UTC, as the database holds it: a forged offset near the ends of the calendar fails
        # here, not in the driver.
        return when.astimezone(UTC), UUID(row_id)
    except (ValueError, OverflowError, UnicodeDecodeError) as exc:
        raise ApiError(422, "validation_error", "cursor: not a cursor this API returned") from exc


#: The cursor format, for the other route modules (queues, search).
encode_cursor = _encode_cursor
decode_cursor = _decode_cursor


async def _require_conversation(conn: asyncpg.Connection, conversation_id: UUID) -> None:
    """404 unless the caller (whose transaction ``conn`` is in) may see the conversation."""
    found = await conn.fetchval("SELECT 1 FROM public.conversations WHERE id = $1", conversation_id)
    if found is None:
        raise not_found("conversation not found")


def _page(rows: list[asyncpg.Record], limit: int) -> tuple[list[asyncpg.Record], str | None]:
    """The first ``limit`` rows and, when there were more, the cursor of the next page."""
    page = rows[:limit]
    more = len(rows) > limit
    return page, _encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None


# -- response schemas (for the OpenAPI document; the handlers above build the JSON) ---------


_object = json_object
_UUID = UUID_SCHEMA
_UUID_OR_NULL: dict[str, Any] = {"anyOf": [_UUID, {"type": "null"}]}
_TIME = TIME_SCHEMA
_TIME_OR_NULL: dict[str, Any] = {"anyOf": [_TIME, {"type": "null"}]}
_CURSOR: dict[str, Any] = {"type": ["string", "null"]}
_BOOL: dict[str, Any] = {"type": "boolean"}
_IDS = envelope(_object(messageIds={"type": "array", "items": _UUID}))

CONVERSATION = _object(
    id=_UUID,
    customerId=_UUID,
    subject={"type": ["string", "null"]},
    status={"type": "string"},
    assignedUserId=_UUID_OR_NULL,
    createdAt=_TIME,
    updatedAt=_TIME,
)
CONVERSATION_ENTRY = {
    **CONVERSATION,
    "required": [*CONVERSATION["required"], "customerName", "lastMessage"],
    "properties": {
        **CONVERSATION["properties"],
        "customerName": {"type": ["string", "null"]},
        "lastMessage": {
            "anyOf": [
                _object(
                    id=_UUID,
                    content={"type": "string"},
                    senderType={"enum": ["customer", "staff"]},
                    senderId=_UUID,
                    createdAt=_TIME,
                    deletedAt=_TIME_OR_NULL,
                    attachments={"type": "array"},
                ),
                {"type": "null"},
            ]
        },
    },
}
MESSAGE = _object(
    id=_UUID,
    conversationId=_UUID,
    content={"type": "string"},
    senderType={"enum": ["customer", "staff"]},
    senderId=_UUID,
    createdAt=_TIME,
    attachments={"type": "array"},
    clientMessageId={"type": ["string", "null"]},
    editedAt=_TIME_OR_NULL,
    deletedAt=_TIME_OR_NULL,
)
HISTORY_MESSAGE = {
    **MESSAGE,
    "required": [*MESSAGE["required"], "delivery"],
    "properties": {
        **MESSAGE["properties"],
        "delivery": {
            "anyOf": [
                _object(status={"enum": ["sent", "delivered", "read", "failed"]}),
                {"type": "null"},
            ]
        },
    },
}
PRESENCE = _object(
    id=_UUID,
    userId=_UUID_OR_NULL,
    customerId=_UUID_OR_NULL,
    status={"enum": ["online", "away", "offline"]},
    lastSeenAt=_TIME,
    metadata={"type": "object"},
)
SUBSCRIPTION = _object(
    supabaseUrl={"type": "string"},
    supabaseKey={"type": "string"},
    channels={"type": "array", "items": {"type": "string"}},
    features=_object(messages=_BOOL, readReceipts=_BOOL, typing=_BOOL, presence=_BOOL),
    filters=_object(userId=_UUID_OR_NULL, customerId=_UUID_OR_NULL, conversationId=_UUID_OR_NULL),
)


# -- request models ----------------------------------------------------------------------


class SubscribeRequest(Model):
    conversation_id: UUID | None = None
    include_presence: bool = True
    include_typing: bool = True
    include_read_receipts: bool = True


class UnsubscribeRequest(Model):
    channels: list[str] = Field(default_factory=list, max_length=100)


class CreateConversation(Model):
    customer_id: UUID | None = None
    subject: str | None = Field(default=None, max_length=500)


class UpdateConversation(Model):
    """Only the fields present change; ``assignedUserId: null`` unassigns."""

    subject: str | None = Field(default=None, max_length=500)
    status: Literal["open", "pending", "resolved", "closed"] | None = None
    assigned_user_id: UUID | None = None


class ListQuery(Model):
    limit: int = Field(default=50, ge=1, le=200)
    before: str | None = None


class SendMessage(Model):
    """``content`` may be empty (not blank), or left out, when the message carries attachments:
    files uploaded first (``attachmentIds``, docs/files.md) or free-form ``attachments``."""

    # Before content: its validator reads them.
    attachments: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    attachment_ids: list[UUID] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    content: str
    client_message_id: str | None = Field(default=None, min_length=1, max_length=255)

    @model_validator(mode="before")
    @classmethod
    def _content_optional_with_attachments(cls, data: Any) -> Any:
        if isinstance(data, dict) and "content" not in data:
            if data.get("attachmentIds") or data.get("attachments"):
                return {**data, "content": ""}
        return data

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str, info: ValidationInfo) -> str:
        if not value and not (info.data.get("attachments") or info.data.get("attachment_ids")):
            raise PydanticCustomError("string_too_short", "String should have at least 1 character")
        if value and not value.strip():
            raise ValueError("content must not be blank")
        return value

    @model_validator(mode="after")
    def _few_attachments(self) -> SendMessage:
        if len(self.attachments) + len(self.attachment_ids) > MAX_ATTACHMENTS:
            raise ValueError(f"at most {MAX_ATTACHMENTS} attachments")
        return self

    def attachments_json(self) -> str:
        """The attachments column: the free-form objects, then one file element per upload
        (the database fills in filename, type and size: migration 0017)."""
        files = [{"type": "file", "id": str(i)} for i in self.attachment_ids]
        return orjson.dumps([*self.attachments, *files]).decode()


class MessageIds(Model):
    message_ids: list[UUID] = Field(min_length=1, max_length=MAX_BATCH)


class Typing(Model):
    is_typing: bool


class Presence(Model):
    status: Literal["online", "away", "offline"]
    metadata: dict[str, Any] | None = None


class UnreadQuery(Model):
    conversation_id: UUID | None = None


# -- handlers --------------------------------------------------------------------------


def register(api: Api, *, anon_key: str, max_message_bytes: int, public_url: PublicUrl) -> None:
    """Add the messaging routes to ``api``; the subscription answer's ``supabaseUrl`` comes from
    ``public_url`` (never from the request's Host)."""

    @api.route(
        "POST",
        "/api/messages/realtime/subscribe",
        summary="What to subscribe to for live updates (channels, features, filters)",
        body=SubscribeRequest,
        response=envelope(SUBSCRIPTION),
        tags=("realtime",),
    )
    async def subscribe(ctx: Context, body: SubscribeRequest) -> dict[str, Any]:
        caller = ctx.caller
        channels: list[str] = []
        if body.conversation_id is not None:
            async with ctx.pool.acquire() as conn, as_caller(conn, caller):
                await _require_conversation(conn, body.conversation_id)
            channels.append(f"conversation:{body.conversation_id}")
            if body.include_presence:
                channels.append(f"presence:{body.conversation_id}")
        elif caller.customer_id is not None:
            channels.append(f"customer:{caller.customer_id}:messages")
        elif caller.user_id is not None:
            channels.append(f"staff:{caller.user_id}:messages")
        presence = body.include_presence and body.conversation_id is not None
        return {
            "supabaseUrl": public_url.for_request(ctx.request),
            "supabaseKey": anon_key,
            "channels": channels,
            "features": {
                "messages": True,
                "readReceipts": body.include_read_receipts,
                "typing": body.include_typing,
                "presence": presence,
            },
            "filters": {
                "userId": str(caller.user_id) if caller.user_id else None,
                "customerId": str(caller.customer_id) if caller.customer_id else None,
                "conversationId": str(body.conversation_id) if body.conversation_id else None,
            },
        }

    @api.route(
        "GET",
        "/api/me",
        summary="Who the token is: a staff user or a customer (the web pages ask this first)",
        response=envelope(
            _object(
                kind={"enum": ["staff", "customer"]}, userId=_UUID_OR_NULL, customerId=_UUID_OR_NULL
            )
        ),
        tags=("realtime",),
    )
    async def me(ctx: Context, _: None) -> dict[str, Any]:
        user, customer = _reader(ctx)
        return {
            "kind": "staff" if user else "customer",
            "userId": str(user) if user else None,
            "customerId": str(customer) if customer else None,
        }

    @api.route(
        "DELETE",
        "/api/messages/realtime/subscribe",
        summary="Acknowledge an unsubscribe (channels are left on the socket itself)",
        body=UnsubscribeRequest,
        response=envelope(
            _object(
                message={"type": "string"}, channels={"type": "array", "items": {"type": "string"}}
            )
        ),
        tags=("realtime",),
    )
    async def unsubscribe(ctx: Context, body: UnsubscribeRequest) -> dict[str, Any]:
        return {"message": "Unsubscribed successfully", "channels": body.channels}

    @api.route(
        "POST",
        "/api/conversations",
        summary="Open a conversation",
        body=CreateConversation,
        status=201,
        response=envelope(CONVERSATION),
        tags=("conversations",),
    )
    async def create_conversation(ctx: Context, body: CreateConversation) -> dict[str, Any]:
        caller = ctx.caller
        customer = body.customer_id
        if caller.customer_id is not None:
            if customer is not None and customer != caller.customer_id:
                raise not_found("customer not found")
            customer = caller.customer_id
        elif customer is None:
            raise ApiError(422, "validation_error", "customerId: required for staff")
        async with ctx.pool.acquire() as conn, as_caller(conn, caller):
            row = await conn.fetchrow(
                "INSERT INTO public.conversations (customer_id, subject) VALUES ($1, $2) "
                "RETURNING *",
                customer,
                body.subject,
            )
        return conversation_json(row)

    # GET /api/conversations (with its filters) and /counts: queues.py, registered first.

    @api.route(
        "GET",
        "/api/conversations/{conversation_id}",
        summary="One conversation",
        response=envelope(CONVERSATION_ENTRY),
        tags=("conversations",),
    )
    async def get_conversation(ctx: Context, _: None) -> dict[str, Any]:
        conversation_id = ctx.uuid_param("conversation_id")
        async with ctx.pool.acquire() as conn, as_caller(conn, ctx.caller):
            row = await conn.fetchrow(f"{_CONVERSATION_ENTRY} WHERE c.id = $1", conversation_id)
        if row is None:
            raise not_found("conversation not found")
        return conversation_entry_json(row)

    @api.route(
        "PATCH",
        "/api/conversations/{conversation_id}",
        summary="Change a conversation's subject, status or assigned staff user (staff assign)",
        body=UpdateConversation,
        response=envelope(CONVERSATION),
        tags=("conversations",),
    )
    async def update_conversation(ctx: Context, body: UpdateConversation) -> dict[str, Any]:
        conversation_id = ctx.uuid_param("conversation_id")
        # The model's field names are the column names.
        given = [
            name
            for name in ("subject", "status", "assigned_user_id")
            if name in body.model_fields_set
        ]
        if "status" in given and body.status is None:
            raise ApiError(422, "validation_error", "status: may not be null")
        async with ctx.pool.acquire() as conn, as_caller(conn, ctx.caller):
            if given:
                sets = ", ".join(f"{n} = ${i + 2}" for i, n in enumerate(given))
                row = await conn.fetchrow(
                    f"UPDATE public.conversations SET {sets} WHERE id = $1 RETURNING *",
                    conversation_id,
                    *(getattr(body, n) for n in given),
                )
            else:
                row = await conn.fetchrow(
                    "SELECT * FROM public.conversations WHERE id = $1", conversation_id
                )
        if row is None:
            raise not_found("conversation not found")
        return conversation_json(row)

    @api.route(
        "POST",
        "/api/conversations/{conversation_id}/messages",
        summary="Send a message; retries with the same clientMessageId return the first one",
        body=SendMessage,
        status=201,
        response=envelope(MESSAGE),
        activity=True,
        tags=("messages",),
    )
    async def send_message(ctx: Context, body: SendMessage) -> dict[str, Any] | web.Response:
        conversation_id = ctx.uuid_param("conversation_id")
        caller = ctx.caller
        if caller.user_id is not None:
            sender_type, sender = "staff", caller.user_id
        elif caller.customer_id is not None:
            sender_type, sender = "customer", caller.customer_id
        else:
            raise ApiError(403, "forbidden", "messages are sent by a staff user or a customer")
        if len(body.content.encode()) > max_message_bytes:
            raise ApiError(413, "payload_too_large", f"content is over {max_message_bytes} bytes")
        async with ctx.pool.acquire() as conn, as_caller(conn, caller):
            await _require_conversation(conn, conversation_id)
            row = await conn.fetchrow(
                "INSERT INTO public.customer_messages "
                "(conversation_id, sender_type, sender_id, content, attachments, client_message_id) "
                "VALUES ($1, $2, $3, $4, $5::jsonb, $6) "
                "ON CONFLICT (sender_type, sender_id, client_message_id) "
                "WHERE client_message_id IS NOT NULL DO NOTHING RETURNING *",
                conversation_id,
                sender_type,
                sender,
                body.content,
                body.attachments_json(),
                body.client_message_id,
            )
            if row is None:
                row = await conn.fetchrow(
                    "SELECT * FROM public.customer_messages WHERE sender_type = $1 "
                    "AND sender_id = $2 AND client_message_id = $3",
                    sender_type,
                    sender,
                    body.client_message_id,
                )
                if row is None or row["conversation_id"] != conversation_id:
                    raise ApiError(
                        409, "conflict", "clientMessageId was used for another conversation"
                    )
                return ok(message_json(row), status=200)  # a retry: the first send's message
        return message_json(row)

    @api.route(
        "GET",
        "/api/conversations/{conversation_id}/messages",
        summary="Message history, newest first, by cursor",
        query=ListQuery,
        response=envelope(
            _object(messages={"type": "array", "items": HISTORY_MESSAGE}, nextCursor=_CURSOR)
        ),
        tags=("messages",),
    )
    async def history(ctx: Context, query: ListQuery) -> dict[str, Any]:
        conversation_id = ctx.uuid_param("conversation_id")
        args: list[Any] = [conversation_id, query.limit + 1]
        where = ""
        if query.before:
            created, row_id = _decode_cursor(query.before)
            where = "AND (m.created_at, m.id) < ($3, $4)"
            args += [created, row_id]
        async with ctx.pool.acquire() as conn, as_caller(conn, ctx.caller):
            await _require_conversation(conn, conversation_id)
            # Each message with its recipient's delivery status (the first recipient's, should
            # there be several): the initial state of the ✓ marks, which then change live.
            rows = await conn.fetch(
                "SELECT m.*, d.status AS delivery_status FROM public.customer_messages m "
                "LEFT JOIN LATERAL (SELECT s.status FROM public.message_delivery_status s "
                "WHERE s.message_id = m.id ORDER BY s.recipient_type, s.recipient_id LIMIT 1) d "
                f"ON true WHERE m.conversation_id = $1 {where} "
                "ORDER BY m.created_at DESC, m.id DESC LIMIT $2",
                *args,
            )
        page, cursor = _page(rows, query.limit)
        return {
            "messages": [
                {
                    **message_json(r),
                    "delivery": {"status": r["delivery_status"]} if r["delivery_status"] else None,
                }
                for r in page
            ],
            "nextCursor": cursor,
        }

    def _reader(ctx: Context) -> tuple[UUID | None, UUID | None]:
        if ctx.caller.user_id is None and ctx.caller.customer_id is None:
            raise ApiError(403, "forbidden", "messages are read by a staff user or a customer")
        return ctx.caller.user_id, ctx.caller.customer_id

    @api.route(
        "POST",
        "/api/messages/{message_id}/read",
        summary="Mark one message read (idempotent)",
        response=_IDS,
        activity=True,
        tags=("receipts",),
    )
    async def mark_read(ctx: Context, _: None) -> dict[str, Any]:
        message_id = ctx.uuid_param("message_id")
        user, customer = _reader(ctx)
        await ctx.limiter.check_read_receipts(user or customer)
        async with ctx.pool.acquire() as conn, as_caller(conn, ctx.caller):
            await conn.execute(
                "SELECT public.mark_message_as_read($1, $2, $3)", message_id, user, customer
            )
        return {"messageIds": [str(message_id)]}

    @api.route(
        "POST",
        "/api/messages/read",
        summary=f"Mark up to {MAX_BATCH} messages read in one transaction",
        body=MessageIds,
        response=_IDS,
        activity=True,
        tags=("receipts",),
    )
    async def mark_read_batch(ctx: Context, body: MessageIds) -> dict[str, Any]:
        user, customer = _reader(ctx)
        ids = sorted(set(body.message_ids))  # one lock order for every batch: no deadlocks
        # One request, one unit of the read-receipt budget, whatever the batch's size (the limit
        # is about requests; MAX_BATCH bounds the size).
        await ctx.limiter.check_read_receipts(user or customer)
        async with ctx.pool.acquire() as conn, as_caller(conn, ctx.caller):
            await conn.execute(
                "SELECT public.mark_message_as_read(m, $2, $3) FROM unnest($1::uuid[]) AS m",
                ids,
                user,
                customer,
            )
        return {"messageIds": [str(i) for i in ids]}

    @api.route(
        "POST",
        "/api/messages/delivered",
        summary="Acknowledge that messages reached the caller's client",
        body=MessageIds,
        response=_IDS,
        tags=("delivery",),
    )
    async def delivered(ctx: Context, body: MessageIds) -> dict[str, Any]:
        user, customer = _reader(ctx)
        recipient_type, recipient = ("staff", user) if user else ("customer", customer)
        ids = sorted(set(body.message_ids))
        async with ctx.pool.acquire() as conn, as_caller(conn, ctx.caller):
            missing = await conn.fetchval(
                "SELECT m FROM unnest($1::uuid[]) AS m WHERE NOT EXISTS "
                "(SELECT 1 FROM public.customer_messages c WHERE c.id = m) ORDER BY m LIMIT 1",
                ids,
            )
            if missing is not None:  # all or nothing, as for receipts
                raise not_found(f"message {missing} not found")
            rows = await conn.fetch(
                "UPDATE public.message_delivery_status SET status = 'delivered' "
                "WHERE message_id = ANY($1::uuid[]) AND recipient_type = $2 AND recipient_id = $3 "
                "AND status IN ('sent', 'failed') RETURNING message_id",
                ids,
                recipient_type,
                recipient,
            )
        return {"messageIds": [str(r["message_id"]) for r in rows]}

    @api.route(
        "POST",
        "/api/conversations/{conversation_id}/typing",
        summary="Start or stop typing (expires by itself after 5 seconds)",
        body=Typing,
        response=envelope(_object(conversationId=_UUID, isTyping=_BOOL)),
        activity=True,
        tags=("typing",),
    )
    async def typing(ctx: Context, body: Typing) -> dict[str, Any]:
        conversation_id = ctx.uuid_param("conversation_id")
        user, customer = _reader(ctx)
        await ctx.limiter.check_typing(user or customer, conversation_id)
        async with ctx.pool.acquire() as conn, as_caller(conn, ctx.caller):
            await conn.execute(
                "SELECT public.update_typing_indicator($1, $2, $3, $4, 5)",
                conversation_id,
                user,
                customer,
                body.is_typing,
            )
        return {"conversationId": str(conversation_id), "isTyping": body.is_typing}

    @api.route(
        "PUT",
        "/api/presence",
        summary="Set the caller's presence",
        body=Presence,
        response=envelope(PRESENCE),
        tags=("presence",),
    )
    async def set_presence(ctx: Context, body: Presence) -> dict[str, Any]:
        user, customer = _reader(ctx)
        if body.metadata is not None:
            problem = metadata_problem(body.metadata, ctx.limits)
            if problem is not None:
                raise ApiError(422, "validation_error", problem)
        await ctx.limiter.check_presence(user or customer)
        metadata = orjson.dumps(body.metadata).decode() if body.metadata is not None else None
        async with ctx.pool.acquire() as conn, as_caller(conn, ctx.caller):
            await conn.execute(
                "SELECT public.update_user_presence($1, $2, $3, $4::jsonb)",
                user,
                customer,
                body.status,
                metadata,
            )
            row = await conn.fetchrow(
                "SELECT * FROM public.user_presence WHERE user_id IS NOT DISTINCT FROM $1 "
                "AND customer_id IS NOT DISTINCT FROM $2",
                user,
                customer,
            )
        found = presence_json(row)
        assert found is not None  # just upserted
        return found

    @api.route(
        "GET",
        "/api/conversations/{conversation_id}/presence",
        summary="Presence of the conversation's participants",
        response=envelope(
            _object(conversationId=_UUID, participants={"type": "array", "items": PRESENCE})
        ),
        tags=("presence",),
    )
    async def conversation_presence(ctx: Context, _: None) -> dict[str, Any]:
        conversation_id = ctx.uuid_param("conversation_id")
        async with ctx.pool.acquire() as conn, as_caller(conn, ctx.caller):
            conv = await conn.fetchrow(
                "SELECT customer_id, assigned_user_id FROM public.conversations WHERE id = $1",
                conversation_id,
            )
            if conv is None:
                raise not_found("conversation not found")
            rows = await conn.fetch(
                "SELECT p.* FROM public.user_presence p WHERE p.customer_id = $1 "
                "OR p.user_id = $2 OR p.user_id IN (SELECT DISTINCT m.sender_id "
                "FROM public.customer_messages m WHERE m.conversation_id = $3 "
                "AND m.sender_type = 'staff')",
                conv["customer_id"],
                conv["assigned_user_id"],
                conversation_id,
            )
        return {
            "conversationId": str(conversation_id),
            "participants": [presence_json(r) for r in rows],
        }

    @api.route(
        "GET",
        "/api/unread",
        summary="Unread messages: the total and per conversation",
        query=UnreadQuery,
        response=envelope(
            _object(
                total={"type": "integer"},
                conversations={
                    "type": "array",
                    "items": _object(conversationId=_UUID, unread={"type": "integer"}),
                },
            )
        ),
        tags=("receipts",),
    )
    async def unread(ctx: Context, query: UnreadQuery) -> dict[str, Any]:
        user, customer = _reader(ctx)
        args: list[Any] = [user or customer]
        if query.conversation_id:
            args.append(query.conversation_id)
        one = query.conversation_id is not None
        per_conversation = staff_unread_sql(one) if user else customer_unread_sql(one)
        async with ctx.pool.acquire() as conn, as_caller(conn, ctx.caller):
            total = await conn.fetchval(
                "SELECT public.get_unread_message_count($1, $2)", user, customer
            )
            rows = await conn.fetch(per_conversation, *args)
        return {
            "total": int(total),
            "conversations": [
                {"conversationId": str(r["conversation_id"]), "unread": int(r["unread"])}
                for r in rows
            ],
        }


def staff_unread_sql(one_conversation: bool) -> str:
    """A staff user's ($1) unread customer messages per conversation (only $2 if asked), from the
    counters of migration 0012: one row per conversation, no anti-join over every customer
    message (docs/database.md, "Unread counts")."""
    only = "AND cc.conversation_id = $2 " if one_conversation else ""
    return (
        "SELECT cc.conversation_id, cc.customer_messages - coalesce(s.receipts, 0) AS unread "
        "FROM rtm.conversation_counters cc LEFT JOIN rtm.staff_read_counters s "
        "ON s.user_id = $1 AND s.conversation_id = cc.conversation_id "
        f"WHERE cc.customer_messages > coalesce(s.receipts, 0) {only}"
        "ORDER BY cc.conversation_id"
    )


def customer_unread_sql(one_conversation: bool) -> str:
    """A customer's ($1) unread staff messages per conversation (only $2 if asked): an anti-join
    over their own conversations only (row-level security)."""
    only = "AND m.conversation_id = $2 " if one_conversation else ""
    return (
        "SELECT m.conversation_id, count(*) AS unread FROM public.customer_messages m "
        f"WHERE m.sender_type = 'staff' {only}AND NOT EXISTS (SELECT 1 FROM "
        "public.message_read_receipts r WHERE r.message_id = m.id AND r.read_by_customer_id = $1) "
        "GROUP BY m.conversation_id ORDER BY m.conversation_id"
    )


def presence_json(row: asyncpg.Record | None) -> dict[str, Any] | None:
    if row is None:
        return None
    metadata = row["metadata"]
    return {
        "id": str(row["id"]),
        "userId": str(row["user_id"]) if row["user_id"] else None,
        "customerId": str(row["customer_id"]) if row["customer_id"] else None,
        "status": row["status"],
        "lastSeenAt": _iso(row["last_seen_at"]),
        "metadata": orjson.loads(metadata) if isinstance(metadata, str) else metadata,
    }
