"""Attachments through the real server: uploads (direct body and multipart) streamed to the
store, attachment-only messages, signed download links, and every refusal (non-participants,
forged or expired links, oversize bodies while streaming, disguised content types).

The directory store runs in a data directory of the test's own; the S3 store against moto's
S3 server on loopback (docs/files.md)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

from realtime_messaging import RealtimeMessagingManager
from realtime_messaging.client.events import MessageEvent
from realtime_messaging.config import FileSettings
from realtime_messaging.server.api.attachments import LinkSigner
from realtime_messaging.storage import S3Config
from tests.api.conftest import Http, assert_error, assert_ok
from tests.conftest import TEST_SECRET, RunningServer, Seed, running_server

MiB = 1024 * 1024
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(5000)
PDF = b"%PDF-1.7\n" + os.urandom(3000)
LIMIT = MiB


@pytest.fixture(scope="module")
async def files(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Any:
    """A server whose files go to a directory of this module's own, with a 1 MiB upload limit
    and at most 5 unsent uploads per uploader."""
    data_dir = tmp_path_factory.mktemp("files")
    settings = FileSettings(max_bytes=LIMIT, max_pending=5)
    async with running_server(database_url, data_dir=data_dir, files=settings) as srv:
        yield srv, data_dir


@pytest.fixture
async def web(files: tuple[RunningServer, Path]) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession() as session:
        yield Http(session, files[0].http_url)


async def upload(
    http: Http,
    conversation: uuid.UUID,
    token: str,
    data: bytes | io.BytesIO,
    content_type: str,
    filename: str = "f",
) -> tuple[int, Any]:
    status, reply, _ = await http.call(
        "POST",
        f"/api/conversations/{conversation}/attachments",
        token,
        data=data,
        params={"filename": filename},
        headers={"Content-Type": content_type},
    )
    return status, reply


async def link(http: Http, attachment: str, token: str) -> str:
    status, reply, _ = await http.call("GET", f"/api/attachments/{attachment}", token)
    url: str = assert_ok(status, reply)["url"]
    return url


async def test_direct_upload_is_stored_under_a_key_of_the_servers_own_and_downloads(
    web: Http, files: tuple[RunningServer, Path], seed: Seed
) -> None:
    _, data_dir = files
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    # The name tries to escape; the declared type lies (it is a PNG).
    status, reply = await upload(
        web, conversation, portal, PNG, "image/jpeg", filename="../../../etc/x\r\n.png"
    )
    data = assert_ok(status, reply, 201)
    assert data["filename"] == "x.png"
    assert (data["contentType"], data["size"]) == ("image/png", len(PNG))
    assert data["sha256"] == hashlib.sha256(PNG).hexdigest() and data["messageId"] is None
    stored = [p for p in (data_dir / "attachments").rglob("*") if p.is_file()]
    on_disk = [p for p in stored if p.parent.name == str(conversation)]
    assert len(on_disk) == 1 and on_disk[0].read_bytes() == PNG
    assert not (data_dir.parent / "etc").exists()

    url = await link(web, data["id"], portal)
    async with web.session.get(url) as response:  # no token: the link is the proof
        assert response.status == 200
        assert await response.read() == PNG
        assert response.headers["Content-Type"] == "image/png"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Content-Disposition"] == (
            "attachment; filename=\"x.png\"; filename*=UTF-8''x.png"
        )


async def test_attachment_only_message_reaches_history_and_subscribers(
    web: Http, files: tuple[RunningServer, Path], seed: Seed
) -> None:
    server, _ = files
    customer, portal = await seed.customer()
    _, staff = await seed.staff()
    conversation = await seed.conversation(customer)
    async with (
        RealtimeMessagingManager(server.http_url, server.anon_key, access_token=portal) as cust,
        RealtimeMessagingManager(server.http_url, server.anon_key, access_token=staff) as agent,
    ):
        sub = await cust.subscribe_to_conversation(conversation)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(PDF), 1000):
                yield PDF[i : i + 1000]

        uploaded = await agent.upload_attachment(
            conversation, chunks(), filename="invoice.pdf", content_type="application/pdf"
        )
        # Before it is sent, only its uploader sees it.
        status, reply, _ = await web.call("GET", f"/api/attachments/{uploaded['id']}", portal)
        assert_error(status, reply, 404, "not_found")
        sent = await agent.send_message(conversation, "", attachment_ids=[uploaded["id"]])
        file_element = {
            "type": "file",
            "id": uploaded["id"],
            "filename": "invoice.pdf",
            "contentType": "application/pdf",
            "size": len(PDF),
        }
        assert sent["content"] == "" and sent["attachments"] == [file_element]
        async with asyncio.timeout(10):
            async for event in sub:
                if isinstance(event, MessageEvent) and event.id == sent["id"]:
                    break
        assert event.attachments == (file_element,) and event.content == ""
        history, _ = await cust.get_messages(conversation)
        assert [(m.id, m.attachments) for m in history] == [(sent["id"], (file_element,))]
    # Sent: now the customer may fetch it.
    url = await link(web, uploaded["id"], portal)
    async with web.session.get(url) as response:
        assert response.status == 200 and await response.read() == PDF
        assert response.headers["Content-Type"] == "application/pdf"


async def test_multipart_upload(web: Http, seed: Seed) -> None:
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    form = aiohttp.FormData()
    form.add_field("note", "ignored")
    form.add_field("file", b"hello, world", filename="notes.txt", content_type="text/plain")
    async with web.session.post(
        f"{web.base}/api/conversations/{conversation}/attachments",
        data=form,
        headers={"Authorization": f"Bearer {portal}"},
    ) as response:
        data = assert_ok(response.status, await response.json(), 201)
    assert (data["filename"], data["contentType"], data["size"]) == ("notes.txt", "text/plain", 12)
    async with web.session.get(await link(web, data["id"], portal)) as response:
        assert await response.read() == b"hello, world"
        # Text is served as text/plain whatever it was, never as something a browser runs.
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"


async def test_non_participants_can_neither_upload_nor_fetch(web: Http, seed: Seed) -> None:
    customer, portal = await seed.customer()
    _, other_portal = await seed.customer()
    conversation = await seed.conversation(customer)
    status, reply = await upload(web, conversation, other_portal, PNG, "image/png")
    assert_error(status, reply, 404, "not_found", "conversation")
    status, reply = await upload(web, conversation, portal, PNG, "image/png")
    attachment = assert_ok(status, reply, 201)["id"]
    await web.call(
        "POST",
        f"/api/conversations/{conversation}/messages",
        portal,
        json={"attachmentIds": [attachment]},
    )
    status, reply, _ = await web.call("GET", f"/api/attachments/{attachment}", other_portal)
    assert_error(status, reply, 404, "not_found")
    status, reply, _ = await web.call("GET", f"/api/attachments/{attachment}")
    assert_error(status, reply, 401, "unauthorized")
    status, reply = await upload(web, conversation, "", PNG, "image/png")
    assert_error(status, reply, 401, "unauthorized")


async def test_forged_expired_and_deleted_links_are_refused(
    web: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    ids = []
    for _ in range(2):
        status, reply = await upload(web, conversation, portal, PNG, "image/png")
        ids.append(assert_ok(status, reply, 201)["id"])
    url = await link(web, ids[0], portal)
    base, token = url.rsplit("/", 1)
    ident, expiry, mac = token.split(".")
    forged = [
        f"{ident}.{expiry}.{mac[:-2]}AA",  # a changed signature
        f"{uuid.UUID(ids[1]).hex}.{expiry}.{mac}",  # another file, this one's signature
        f"{ident}.{int(expiry) + 3600}.{mac}",  # a later expiry
        f"{ident}.{expiry}",
        "x" * 500,
    ]
    for bad in forged:
        async with web.session.get(f"{base}/{bad}") as response:
            assert response.status == 403, bad
            assert_error(response.status, await response.json(), 403, "forbidden")
    expired = LinkSigner(TEST_SECRET).sign(uuid.UUID(ids[0]), int(time.time()) - 1)
    async with web.session.get(f"{base}/{expired}") as response:
        assert_error(response.status, await response.json(), 403, "forbidden", "expired")
    other_secret = LinkSigner("another secret").sign(uuid.UUID(ids[0]), int(time.time()) + 60)
    async with web.session.get(f"{base}/{other_secret}") as response:
        assert response.status == 403
    # A link made while the message existed stops working when the message is deleted.
    status, reply, _ = await web.call(
        "POST",
        f"/api/conversations/{conversation}/messages",
        portal,
        json={"content": "see", "attachmentIds": [ids[0]]},
    )
    message = assert_ok(status, reply, 201)["id"]
    url = await link(web, ids[0], portal)
    await pool.execute(
        "UPDATE customer_messages SET deleted_at = now(), content = '', attachments = '[]' "
        "WHERE id = $1",
        uuid.UUID(message),
    )
    async with web.session.get(url) as response:
        assert_error(response.status, await response.json(), 404, "not_found")
    status, reply, _ = await web.call("GET", f"/api/attachments/{ids[0]}", portal)
    assert_error(status, reply, 404, "not_found")


async def test_messages_carry_only_the_senders_own_unsent_files(
    web: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    _, staff = await seed.staff()
    conversation = await seed.conversation(customer)
    elsewhere = await seed.conversation(customer)
    status, reply = await upload(web, conversation, portal, PNG, "image/png")
    mine = assert_ok(status, reply, 201)["id"]
    path = f"/api/conversations/{conversation}/messages"
    refused: list[tuple[str, str, dict[str, Any]]] = [
        (staff, path, {"attachmentIds": [mine]}),  # not the uploader
        (portal, f"/api/conversations/{elsewhere}/messages", {"attachmentIds": [mine]}),
        (portal, path, {"attachmentIds": [str(uuid.uuid4())]}),  # no such file
        (portal, path, {"attachmentIds": [mine, mine]}),
        # The file element forged by hand instead of by id: checked all the same.
        (portal, path, {"attachments": [{"type": "file", "id": str(uuid.uuid4())}]}),
        (portal, path, {"attachments": [{"type": "file", "id": "../../x"}]}),
        (portal, path, {"content": ""}),
        (portal, path, {}),
        (portal, path, {"attachmentIds": [mine] * 11}),
    ]
    for token, where, body in refused:
        status, reply, _ = await web.call("POST", where, token, json=body)
        assert_error(status, reply, 422, "validation_error")
    # A forged element is replaced by the truth from the upload's row.
    forged = {"type": "file", "id": mine, "filename": "evil.exe", "size": 1}
    status, reply, _ = await web.call("POST", path, portal, json={"attachments": [forged]})
    sent = assert_ok(status, reply, 201)
    assert sent["attachments"] == [
        {"type": "file", "id": mine, "filename": "f", "contentType": "image/png", "size": len(PNG)}
    ]
    # Sent once: not again.
    status, reply, _ = await web.call("POST", path, portal, json={"attachmentIds": [mine]})
    assert_error(status, reply, 422, "validation_error", "already sent")
    assert await pool.fetchval(
        "SELECT message_id FROM rtm.attachments WHERE id = $1", uuid.UUID(mine)
    ) == uuid.UUID(sent["id"])


async def test_disguised_and_unlisted_types_are_refused(web: Http, seed: Seed) -> None:
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    for data, declared in (
        (b"<html><script>alert(1)</script>", "image/png"),
        (b"<html><script>alert(1)</script>", "text/html"),
        (b"<svg onload=alert(1)>", "image/svg+xml"),
        (b"MZ\x90\x00" + bytes(100), "application/pdf"),
        (b"MZ\x90\x00" + bytes(100), "text/plain"),
    ):
        status, reply = await upload(web, conversation, portal, data, declared)
        assert_error(status, reply, 415, "unsupported_media_type")


async def test_pending_uploads_are_bounded(web: Http, seed: Seed) -> None:
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    for _ in range(5):
        status, reply = await upload(web, conversation, portal, b"t", "text/plain")
        assert_ok(status, reply, 201)
    status, reply = await upload(web, conversation, portal, b"t", "text/plain")
    assert_error(status, reply, 429, "rate_limited", "not sent")


async def _raw_request(url: str, head: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


async def test_a_declared_oversize_body_is_refused_before_it_is_sent(
    files: tuple[RunningServer, Path], seed: Seed
) -> None:
    server, _ = files
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    reader, writer = await _raw_request(
        server.http_url,
        f"POST /api/conversations/{conversation}/attachments HTTP/1.1\r\n"
        f"Host: x\r\nAuthorization: Bearer {portal}\r\nContent-Type: image/png\r\n"
        f"Content-Length: {30_000_000}\r\n\r\n",
    )
    try:
        async with asyncio.timeout(10):
            status_line = await reader.readline()  # answered with no byte of the body sent
        assert status_line.startswith(b"HTTP/1.1 413"), status_line
    finally:
        writer.close()


async def test_an_oversize_stream_is_refused_while_it_streams(
    files: tuple[RunningServer, Path], seed: Seed
) -> None:
    """30 MB sent chunked (no length to judge by) against the 1 MiB limit: the 413 arrives
    long before the client could have sent it all, and nothing is kept."""
    server, data_dir = files
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    reader, writer = await _raw_request(
        server.http_url,
        f"POST /api/conversations/{conversation}/attachments HTTP/1.1\r\n"
        f"Host: x\r\nAuthorization: Bearer {portal}\r\nContent-Type: text/plain\r\n"
        "Transfer-Encoding: chunked\r\n\r\n",
    )
    sent = 0
    chunk = b"x" * 65536
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"

    async def send() -> None:
        nonlocal sent
        try:
            while sent < 30_000_000:
                writer.write(frame)
                await writer.drain()
                sent += len(chunk)
        except (ConnectionError, OSError):
            pass

    sender = asyncio.create_task(send())
    try:
        async with asyncio.timeout(30):
            status_line = await reader.readline()
        at_answer = sent
        assert status_line.startswith(b"HTTP/1.1 413"), status_line
        assert at_answer < 20_000_000, at_answer
    finally:
        sender.cancel()
        writer.close()
    directory = data_dir / "attachments" / str(conversation)
    assert not directory.exists() or list(directory.iterdir()) == []


# -- the S3 store behind the same API --------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


async def test_s3_store_uploads_and_redirects_downloads_to_presigned_urls(
    moto: str, database_url: str, tmp_path: Path, seed: Seed
) -> None:
    bucket = f"rtm-{uuid.uuid4().hex[:10]}"
    s3 = S3Config(
        bucket=bucket,
        endpoint_url=moto,
        region="us-east-1",
        access_key_id="test",
        secret_access_key="test",
        part_size=5 * MiB,
    )
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "s3",
        endpoint_url=moto,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ) as client:
        await client.create_bucket(Bucket=bucket)
        settings = FileSettings(max_bytes=20 * MiB, s3=s3)
        async with (
            running_server(database_url, data_dir=tmp_path, files=settings) as server,
            aiohttp.ClientSession() as session,
        ):
            http = Http(session, server.http_url)
            customer, portal = await seed.customer()
            conversation = await seed.conversation(customer)
            big = b"%PDF-1.5\n" + os.urandom(12 * MiB)  # several parts
            status, reply = await upload(
                http, conversation, portal, io.BytesIO(big), "application/pdf", filename="big.pdf"
            )
            data = assert_ok(status, reply, 201)
            listed = await client.list_objects_v2(Bucket=bucket)
            assert [o["Size"] for o in listed["Contents"]] == [len(big)]
            url = await link(http, data["id"], portal)
            async with session.get(url, allow_redirects=False) as response:
                assert response.status == 307
                presigned = response.headers["Location"]
                assert presigned.startswith(moto) and "X-Amz-Signature=" in presigned
            async with session.get(url) as response:  # followed: from the store itself
                assert response.status == 200
                assert (
                    hashlib.sha256(await response.read()).digest() == hashlib.sha256(big).digest()
                )
                assert response.headers["Content-Type"] == "application/pdf"
                assert response.headers["Content-Disposition"].startswith(
                    'attachment; filename="big.pdf"'
                )
        assert not (tmp_path / "attachments").exists()


async def test_sdk_uploads_a_file_from_disk_and_head_answers_without_the_body(
    web: Http, files: tuple[RunningServer, Path], seed: Seed, tmp_path: Path
) -> None:
    server, _ = files
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    path = tmp_path / "scan.png"
    path.write_bytes(PNG)
    async with RealtimeMessagingManager(
        server.http_url, server.anon_key, access_token=portal
    ) as manager:
        uploaded = await manager.upload_attachment(
            conversation, path, filename="scan.png", content_type="image/png"
        )
        url = (await manager.get_attachment(uploaded["id"]))["url"]
    assert (uploaded["filename"], uploaded["size"]) == ("scan.png", len(PNG))
    async with web.session.head(url) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(PNG))
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert await response.read() == b""
