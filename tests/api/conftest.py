"""An HTTP client for the API tests, speaking to the real server over a real socket."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import RunningServer


class Http:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        json: Any = None,
        data: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        async with self.session.request(
            method, self.base + path, json=json, data=data, headers=headers, params=params
        ) as response:
            body = await response.json(content_type=None) if await response.read() else None
            return response.status, body, response


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession() as session:
        yield Http(session, server.http_url)


# -- helpers shared by the API tests -----------------------------------------------------

UNKNOWN = "00000000-0000-4000-8000-000000000000"  # a well-formed UUID no row has


def assert_error(status: int, reply: Any, expected: int, code: str, *fragments: str) -> None:
    """A 4xx in the envelope, with the code and a message naming each fragment."""
    assert status == expected, (status, reply)
    assert isinstance(reply, dict) and reply["success"] is False, reply
    assert reply["version"] == "v1" and isinstance(reply["timestamp"], str), reply
    assert set(reply) == {"success", "version", "timestamp", "error"}, reply
    assert set(reply["error"]) == {"code", "message"}, reply
    assert reply["error"]["code"] == code, reply
    message = reply["error"]["message"]
    assert isinstance(message, str) and message, reply
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def assert_postgrest_error(
    status: int, reply: Any, expected: int, code: str, *fragments: str
) -> None:
    """A 4xx under /rest/v1, in PostgREST's shape: exactly code, message, details and hint."""
    assert status == expected, (status, reply)
    assert isinstance(reply, dict) and set(reply) == {"code", "message", "details", "hint"}, reply
    assert reply["code"] == code, reply
    message = reply["message"]
    assert isinstance(message, str) and message, reply
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def assert_ok(status: int, reply: Any, expected: int = 200) -> Any:
    """A success in the envelope; returns its data."""
    assert status == expected, (status, reply)
    assert isinstance(reply, dict) and set(reply) == {"success", "version", "timestamp", "data"}
    assert reply["success"] is True and reply["version"] == "v1", reply
    assert isinstance(reply["timestamp"], str) and reply["timestamp"], reply
    return reply["data"]


async def insert_message(
    pool: asyncpg.Pool,
    conversation: uuid.UUID,
    sender_type: str,
    sender: uuid.UUID,
    content: str = "m",
) -> uuid.UUID:
    """A message written directly in SQL (as the owner: no row-level security)."""
    message_id: uuid.UUID = await pool.fetchval(
        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
        "VALUES ($1, $2, $3, $4) RETURNING id",
        conversation,
        sender_type,
        sender,
        content,
    )
    return message_id


async def insert_messages(
    pool: asyncpg.Pool, conversation: uuid.UUID, sender_type: str, sender: uuid.UUID, n: int
) -> list[uuid.UUID]:
    """``n`` messages in one statement, oldest first."""
    rows = await pool.fetch(
        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
        "SELECT $1, $2, $3, 'm' || g FROM generate_series(1, $4) g RETURNING id",
        conversation,
        sender_type,
        sender,
        n,
    )
    return [r["id"] for r in rows]


async def count(pool: asyncpg.Pool, sql: str, *args: Any) -> int:
    value: int = await pool.fetchval(f"SELECT count(*) FROM {sql}", *args)
    return value
