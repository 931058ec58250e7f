"""Attachments: upload to a conversation, a signed download link, and the download itself
(docs/files.md).

Why signed links rather than a download behind the bearer token: a browser fetches an image or a
file with a plain GET (an ``<img>``, a link), which carries no Authorization header. So the
participant check happens when the link is made (as the caller, under row-level security), and
the link proves it for a few minutes: an HMAC of the attachment and the expiry, keyed by the
server's secret. Nothing in a link, a filename or a declared type ever becomes a path.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import Field

from ...config import FileSettings
from ...storage import NotStored, Storage, StorageError, TooLarge, new_key
from ...storage.policy import (
    DEFAULT_CONTENT_TYPES,
    SNIFF_BYTES,
    Refused,
    check_content,
    content_disposition,
    display_name,
    normalise_type,
    served_type,
)
from ...store.caller import as_caller
from ..http import error
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

#: Bytes read from the request per step (and the most held at once by the directory store).
CHUNK = 64 * 1024
#: What a multipart body may add around the file: boundaries and part headers.
MULTIPART_OVERHEAD = 16 * 1024
#: Parts a multipart upload may have before its file part.
MAX_PARTS = 4
UPLOAD_PATH = "/api/conversations/{conversation_id}/attachments"
#: What a malformed body raises while it is read (bad multipart headers, a broken chunked
#: encoding): the client's fault, a 400.
_MALFORMED = (HttpProcessingError, ValueError, asyncio.IncompleteReadError)
#: Uploads one process runs at once; more are told to retry (429), not queued.
MAX_CONCURRENT_UPLOADS = 32

ATTACHMENT = json_object(
    id=UUID_SCHEMA,
    conversationId=UUID_SCHEMA,
    filename={"type": "string"},
    contentType={"type": "string"},
    size={"type": "integer"},
    sha256={"type": "string"},
    messageId={"anyOf": [UUID_SCHEMA, {"type": "null"}]},
    createdAt=TIME_SCHEMA,
)
DOWNLOAD = {
    **ATTACHMENT,
    "required": [*ATTACHMENT["required"], "url", "expiresAt"],
    "properties": {**ATTACHMENT["properties"], "url": {"type": "string"}, "expiresAt": TIME_SCHEMA},
}

_SELECT = (
    "SELECT a.*, m.deleted_at AS message_deleted_at FROM rtm.attachments a "
    "LEFT JOIN public.customer_messages m ON m.id = a.message_id WHERE a.id = $1"
)


class UploadQuery(Model):
    """For a direct body: its filename (multipart bodies name it in their part)."""

    filename: str | None = Field(default=None, min_length=1, max_length=255)


def attachment_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "conversationId": str(row["conversation_id"]),
        "filename": row["filename"],
        "contentType": row["content_type"],
        "size": int(row["size_bytes"]),
        "sha256": row["sha256"],
        "messageId": str(row["message_id"]) if row["message_id"] else None,
        "createdAt": row["created_at"].isoformat(),
    }


class LinkSigner:
    """Signs and checks download links: ``<attachment hex>.<expiry>.<HMAC-SHA256>``."""

    def __init__(self, secret: str) -> None:
        # A key of its own, derived from the server secret: a link signature is never
        # mistakable for a token signature.
        self._key = hmac.new(secret.encode(), b"rtm attachment links v1", hashlib.sha256).digest()

    def _mac(self, message: str) -> str:
        digest = hmac.new(self._key, message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, attachment_id: UUID, expires: int) -> str:
        message = f"{attachment_id.hex}.{expires}"
        return f"{message}.{self._mac(message)}"

    def verify(self, token: str, now: float) -> tuple[UUID, int]:
        """The attachment and expiry of a valid, unexpired link; ApiError 403 otherwise."""
        parts = token.split(".")
        if len(parts) != 3 or len(token) > 120:
            raise ApiError(403, "forbidden", "not a valid download link")
        ident, expiry, mac = parts
        if not hmac.compare_digest(mac.encode(), self._mac(f"{ident}.{expiry}").encode()):
            raise ApiError(403, "forbidden", "not a valid download link")
        # Signed by this server, so well formed.
        expires = int(expiry)
        if expires < now:
            raise ApiError(403, "forbidden", "the download link has expired; ask for a new one")
        return UUID(hex=ident), expires


async def _chunks_of(read: Any, head: bytes, digest: Any, limit: int) -> AsyncIterator[bytes]:
    """``head``, then the rest of the stream by ``read(CHUNK)``, hashed on the way; stops reading
    one chunk past ``limit`` (the store then refuses: TooLarge)."""
    size = len(head)
    digest.update(head)
    if head:
        yield head
    while size <= limit:
        chunk = await read(CHUNK)
        if not chunk:
            return
        size += len(chunk)
        digest.update(chunk)
        yield chunk


async def _read_head(read: Any) -> bytes:
    """At least :data:`SNIFF_BYTES` from the stream (fewer at its end)."""
    head = b""
    while len(head) < SNIFF_BYTES:
        chunk = await read(CHUNK)
        if not chunk:
            break
        head += chunk
    return head


async def _file_part(request: web.Request) -> BodyPartReader:
    """The part named ``file`` of a multipart body (any before it are skipped, a few at most)."""
    reader: MultipartReader = await request.multipart()
    for _ in range(MAX_PARTS):
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise ApiError(422, "validation_error", "file: nested multipart is not accepted")
        if part.name == "file":
            return part
        await part.release()
    raise ApiError(422, "validation_error", "file: a multipart body needs a part named file")


def register(
    api: Api, *, storage: Storage, settings: FileSettings, secret: str, public_url: PublicUrl
) -> list[web.RouteDef]:
    """Add the attachment routes to ``api`` (bytes go to ``storage``); returns the download
    route of the signed links, for the application's router."""
    signer = LinkSigner(secret)
    allowed = settings.content_types or DEFAULT_CONTENT_TYPES
    uploads = asyncio.Semaphore(MAX_CONCURRENT_UPLOADS)

    @api.route(
        "POST",
        UPLOAD_PATH,
        summary=(
            "Upload a file to a conversation (multipart/form-data with a part named file, or the "
            "file itself as the body); send it with a message by its id"
        ),
        query=UploadQuery,
        status=201,
        response=envelope(ATTACHMENT),
        activity=True,
        tags=("attachments",),
    )
    async def upload_attachment(ctx: Context, query: UploadQuery) -> dict[str, Any]:
        conversation_id = ctx.uuid_param("conversation_id")
        caller = ctx.caller
        if caller.user_id is not None:
            uploader_type, uploader = "staff", caller.user_id
        elif caller.customer_id is not None:
            uploader_type, uploader = "customer", caller.customer_id
        else:
            raise ApiError(403, "forbidden", "files are uploaded by a staff user or a customer")
        request = ctx.request
        multipart = request.content_type == "multipart/form-data"
        declared_length = request.content_length
        allowance = MULTIPART_OVERHEAD if multipart else 0
        if declared_length is not None and declared_length > settings.max_bytes + allowance:
            raise _too_large(settings.max_bytes)
        async with ctx.pool.acquire() as conn, as_caller(conn, caller):
            found = await conn.fetchval(
                "SELECT 1 FROM public.conversations WHERE id = $1", conversation_id
            )
        if found is None:
            raise not_found("conversation not found")
        pending = await ctx.pool.fetchval(
            "SELECT count(*) FROM rtm.attachments WHERE uploader_type = $1 AND uploader_id = $2 "
            "AND message_id IS NULL",
            uploader_type,
            uploader,
        )
        if pending >= settings.max_pending:
            raise ApiError(
                429,
                "rate_limited",
                f"{settings.max_pending} files are uploaded but not sent; send or wait",
                headers={"Retry-After": "60"},
            )
        if uploads.locked():
            raise ApiError(
                429, "rate_limited", "too many uploads at once", headers={"Retry-After": "1"}
            )
        async with uploads:
            if multipart:
                try:
                    part = await _file_part(request)
                except _MALFORMED as exc:
                    raise ApiError(400, "invalid_body", "not a valid multipart body") from exc
                filename = display_name(part.filename)
                declared = normalise_type(part.headers.get("Content-Type"))
                read: Any = part.read_chunk
            else:
                filename = display_name(query.filename)
                declared = normalise_type(request.headers.get("Content-Type"))
                read = request.content.read
            try:
                head = await _read_head(read)
            except _MALFORMED as exc:
                raise ApiError(400, "invalid_body", "the body could not be read") from exc
            try:
                kind = check_content(declared, head, allowed)
            except Refused as exc:
                raise ApiError(415, "unsupported_media_type", str(exc)) from exc
            digest = hashlib.sha256()
            key = new_key(conversation_id)
            try:
                size = await storage.put(
                    key,
                    _chunks_of(read, head, digest, settings.max_bytes),
                    max_bytes=settings.max_bytes,
                )
            except TooLarge as exc:
                raise _too_large(settings.max_bytes) from exc
            except _MALFORMED as exc:
                raise ApiError(400, "invalid_body", "the body could not be read") from exc
            except StorageError as exc:
                raise ApiError(
                    503,
                    "unavailable",
                    "the file store is unavailable; retry",
                    headers={"Retry-After": "2"},
                ) from exc
        try:
            row = await ctx.pool.fetchrow(
                "INSERT INTO rtm.attachments (conversation_id, uploader_type, uploader_id, "
                "storage_key, filename, content_type, size_bytes, sha256) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
                conversation_id,
                uploader_type,
                uploader,
                key,
                filename,
                kind,
                size,
                digest.hexdigest(),
            )
        except BaseException:
            await storage.delete(key)  # the conversation went away meanwhile, or worse
            raise
        return attachment_json(row)

    @api.route(
        "GET",
        "/api/attachments/{attachment_id}",
        summary="A file's details and a short-lived signed download URL (participants only)",
        response=envelope(DOWNLOAD),
        tags=("attachments",),
    )
    async def get_attachment(ctx: Context, _: None) -> dict[str, Any]:
        attachment_id = ctx.uuid_param("attachment_id")
        async with ctx.pool.acquire() as conn, as_caller(conn, ctx.caller):
            row = await conn.fetchrow(_SELECT, attachment_id)
        if row is None or row["message_deleted_at"] is not None:
            raise not_found("attachment not found")
        expires = int(time.time()) + settings.url_ttl
        base = public_url.for_request(ctx.request).rstrip("/")
        return {
            **attachment_json(row),
            "url": f"{base}/files/{signer.sign(attachment_id, expires)}",
            "expiresAt": datetime.fromtimestamp(expires, UTC).isoformat(),
        }

    async def download(request: web.Request) -> web.StreamResponse:
        """``GET /files/{token}``: outside the API's document and its bearer tokens (a browser
        follows the link as is); errors still in the envelope."""
        try:
            return await _download(request)
        except ApiError as exc:
            return error(exc.status, exc.code, exc.message, headers=exc.headers)

    async def _download(request: web.Request) -> web.StreamResponse:
        attachment_id, expires = signer.verify(request.match_info["token"], time.time())
        row = await api.pool.fetchrow(_SELECT, attachment_id)
        if row is None or row["message_deleted_at"] is not None:
            raise not_found("attachment not found")
        disposition = content_disposition(row["filename"])
        content_type = served_type(row["content_type"])
        headers = {
            "Content-Disposition": disposition,
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "private, no-store",
        }
        remaining = max(1, expires - int(time.time()))
        try:
            url = await storage.url(
                row["storage_key"],
                expires_in=remaining,
                disposition=disposition,
                content_type=content_type,
            )
        except StorageError as exc:
            raise ApiError(503, "unavailable", "the file store is unavailable; retry") from exc
        if url is not None:
            return web.Response(status=307, headers={**headers, "Location": url})
        chunks = storage.open(row["storage_key"])
        try:
            first = await anext(chunks, b"")
        except NotStored as exc:
            raise not_found("the file is gone from the store") from exc
        response = web.StreamResponse(headers={**headers, "Content-Type": content_type})
        response.content_length = int(row["size_bytes"])
        try:
            await response.prepare(request)
            if request.method != "HEAD":  # HEAD: the headers alone
                await response.write(first)
                async for chunk in chunks:
                    await response.write(chunk)
            await response.write_eof()
        finally:
            await chunks.aclose()
        return response

    return [web.get("/files/{token}", download)]


def document(spec: dict[str, Any]) -> None:
    """Declare the upload's body in the OpenAPI document: the framework knows JSON bodies only."""
    upload = spec["paths"][UPLOAD_PATH]["post"]
    upload["requestBody"] = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"the file is larger than {limit} bytes")
