"""The examples run against a real server: the README's curl walkthrough and the Python usage
examples (each as a subprocess, its output read line by line while the test plays the other side).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from realtime_messaging.client import MessageEvent, RealtimeMessagingManager, TypingIndicatorEvent
from tests.client.test_manager import next_of
from tests.conftest import RunningServer, Seed

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("named_by", ["RTM_URL", "argument", "RTM_PORT"])
async def test_curl_demo(server: RunningServer, named_by: str, tmp_path: Path) -> None:
    """The demo finds the server by URL, by the port given as its argument, or by RTM_PORT as
    ``rtm serve`` reads it; without SERVICE_KEY it asks ``rtm keys`` (here: RTM_JWT_SECRET)."""
    port = str(urlsplit(server.http_url).port)
    env = {k: v for k, v in os.environ.items() if k not in ("RTM_URL", "RTM_PORT", "RTM_HOST")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    args: list[str] = []
    if named_by == "RTM_URL":
        env.update(RTM_URL=server.http_url, SERVICE_KEY=server.service_key)
    elif named_by == "argument":
        args.append(port)
        env["SERVICE_KEY"] = server.service_key
    else:
        env.update(RTM_PORT=port, RTM_HOST="0.0.0.0", RTM_JWT_SECRET=server.secret)
    proc = await asyncio.create_subprocess_exec(
        "bash",
        str(ROOT / "examples" / "curl_demo.sh"),
        *args,
        env=env,
        cwd=tmp_path,  # `rtm keys` must not make a data directory in the project
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0] == f"server: http://127.0.0.1:{port}"
    assert "customer unread before: 1" in lines
    assert "customer unread after: 0" in lines
    assert lines[-2:] == ["  customer: Where is my order?", "  staff: It ships today."]


# -- the Python usage examples ---------------------------------------------------------------


class Example:
    """A running example script whose output is read line by line, each with a bounded wait."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self, timeout: float = 15.0) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise AssertionError(f"the example ended early: {await self.stderr()}")
        return raw.decode().rstrip("\n")

    async def finish(self, timeout: float = 15.0) -> list[str]:
        """The rest of the output, once the example has exited by itself with status 0."""
        assert self.proc.stdout is not None
        rest = await asyncio.wait_for(self.proc.stdout.read(), timeout)
        status = await asyncio.wait_for(self.proc.wait(), timeout)
        errors = await self.stderr()
        assert (status, errors) == (0, "")  # no traceback, no warning
        return rest.decode().splitlines()

    async def stderr(self) -> str:
        assert self.proc.stderr is not None
        return (await asyncio.wait_for(self.proc.stderr.read(), 5)).decode()


@asynccontextmanager
async def example(name: str, *args: str, **env: str) -> AsyncIterator[Example]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples" / name),
        *args,
        env={
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONIOENCODING": "utf-8",
            "PYTHONWARNINGS": "error",
            **env,
        },
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield Example(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@dataclass
class People:
    customer_id: uuid.UUID
    staff_id: uuid.UUID
    conversation: uuid.UUID
    customer: RealtimeMessagingManager
    staff: RealtimeMessagingManager
    #: The examples' environment: RTM_URL, RTM_ANON_KEY and the ids (not the token).
    env: dict[str, str]
    portal: str
    staff_jwt: str


@asynccontextmanager
async def people(server: RunningServer, seed: Seed) -> AsyncIterator[People]:
    """A customer and a staff user in one conversation, each with a manager."""
    customer_id, portal = await seed.customer()
    staff_id, staff_jwt = await seed.staff()
    conversation = await seed.conversation(customer_id)
    env = {
        "RTM_URL": server.http_url,
        "RTM_ANON_KEY": server.anon_key,
        "RTM_CUSTOMER_ID": str(customer_id),
        "RTM_USER_ID": str(staff_id),
        "RTM_CONVERSATION_ID": str(conversation),
    }
    async with (
        RealtimeMessagingManager(server.http_url, server.anon_key, access_token=portal) as c,
        RealtimeMessagingManager(server.http_url, server.anon_key, access_token=staff_jwt) as s,
    ):
        yield People(customer_id, staff_id, conversation, c, s, env, portal, staff_jwt)


async def test_customer_chat(server: RunningServer, seed: Seed) -> None:
    async with people(server, seed) as p:
        async with example("customer_chat.py", RTM_ACCESS_TOKEN=p.portal, **p.env) as ex:
            assert await ex.line() == f"listening as customer {p.customer_id}"
            asked = await p.customer.send_message(p.conversation, "Where is my order?")
            assert await ex.line() == "customer: Where is my order?"
            await p.staff.mark_message_as_read(asked["id"])
            assert await ex.line() == f"message {asked['id']} was read"
            await p.staff.send_typing_indicator(p.conversation, p.staff_id, None, True)
            assert await ex.line() == "someone is typing..."
            await p.staff.send_message(p.conversation, "It ships today.")
            rest = await ex.finish()
        assert rest[0] == "staff: It ships today."
        assert set(rest[1:]) <= {"nobody is typing"}  # the reply stopped the typing


async def test_typing_indicator(server: RunningServer, seed: Seed) -> None:
    async with people(server, seed) as p:
        watch = await p.staff.subscribe_to_conversation(p.conversation)
        args = ("--text", "Hello there", "--delay", "0.02")
        async with example("typing_indicator.py", *args, RTM_ACCESS_TOKEN=p.portal, **p.env) as ex:
            assert await ex.line() == "typing 11 keys"
            start = await next_of(watch, TypingIndicatorEvent, 15)
            assert start.is_typing and start.customer_id == str(p.customer_id)
            assert await ex.finish() == ["sent: Hello there"]
        message = await next_of(watch, MessageEvent, 15)
        assert (message.content, message.sender_type) == ("Hello there", "customer")
        stop = await next_of(watch, TypingIndicatorEvent, 15)
        assert not stop.is_typing and stop.started_at == start.started_at


async def test_mark_read(server: RunningServer, seed: Seed) -> None:
    async with people(server, seed) as p:
        async with example(
            "mark_read.py", "--messages", "3", RTM_ACCESS_TOKEN=p.portal, **p.env
        ) as ex:
            assert await ex.line() == "unread: 0"
            for i in range(1, 4):
                await p.staff.send_message(p.conversation, f"reply {i}")
            assert [await ex.line() for _ in range(3)] == [f"seen: reply {i}" for i in (1, 2, 3)]
            assert await ex.finish() == ["marked 3 messages read", "unread: 0"]
        assert await p.customer.get_unread_count() == 0


async def test_presence(server: RunningServer, seed: Seed, pool: asyncpg.Pool) -> None:
    async with people(server, seed) as p:
        await pool.execute(
            "UPDATE conversations SET assigned_user_id = $1 WHERE id = $2",
            p.staff_id,
            p.conversation,
        )
        async with example("presence.py", RTM_ACCESS_TOKEN=p.staff_jwt, **p.env) as ex:
            assert await ex.line() == "customer online: no"
            for status in ("online", "away"):
                await p.customer.update_presence(None, p.customer_id, status)
                assert await ex.line() == f"customer is {status}"
            await p.customer.update_presence(None, p.customer_id, "offline")
            assert await ex.finish() == ["customer is offline"]
        # The example was online while it watched, and said it left.
        [staff] = [s for s in await p.customer.get_presence(p.conversation) if s.user_id]
        assert staff.user_id == str(p.staff_id) and staff.status == "offline"


async def test_staff_dashboard(server: RunningServer, seed: Seed) -> None:
    async with people(server, seed) as p:
        async with example(
            "staff_dashboard.py", "--updates", "2", RTM_ACCESS_TOKEN=p.staff_jwt, **p.env
        ) as ex:
            first = await ex.line()
            match = re.fullmatch(r"Messages \((\d+) unread\)", first)
            assert match, first
            unread = int(match[1])  # every customer message of every conversation counts
            asked = await p.customer.send_message(p.conversation, "Where is my order?")
            assert await ex.line() == f"Messages ({unread + 1} unread)"
            await p.staff.mark_message_as_read(asked["id"])
            assert await ex.finish() == [f"Messages ({unread} unread)"]


async def test_read_receipts(server: RunningServer, seed: Seed, pool: asyncpg.Pool) -> None:
    async with people(server, seed) as p:
        await pool.execute(
            "UPDATE conversations SET assigned_user_id = $1 WHERE id = $2",
            p.staff_id,
            p.conversation,
        )
        inbox = await p.staff.subscribe_to_staff_messages(p.staff_id)  # acknowledges delivery
        args = ("--text", "Has it shipped?")
        async with example("read_receipts.py", *args, RTM_ACCESS_TOKEN=p.portal, **p.env) as ex:
            sent = await ex.line()
            assert sent.startswith("sent: Has it shipped? (id ")
            assert await ex.line() == "✓ sent"
            message = await next_of(inbox, MessageEvent, 15, content="Has it shipped?")
            assert sent == f"sent: Has it shipped? (id {message.id})"
            assert await ex.line() == "✓ delivered"
            await p.staff.mark_message_as_read(message.id)
            assert await ex.finish() == ["✓✓ Read"]


async def test_setup_demo(server: RunningServer) -> None:
    env = {"RTM_URL": server.http_url, "RTM_SERVICE_KEY": server.service_key}
    async with example("setup_demo.py", **env) as ex:
        lines = await ex.finish()
    exported = dict(line.removeprefix("export ").split("=", 1) for line in lines)
    assert exported["RTM_URL"] == server.http_url
    async with (
        RealtimeMessagingManager(
            server.http_url, server.anon_key, access_token=exported["CUSTOMER_TOKEN"]
        ) as customer,
        RealtimeMessagingManager(
            server.http_url, server.anon_key, access_token=exported["STAFF_TOKEN"]
        ) as staff,
    ):
        sent = await customer.send_message(exported["RTM_CONVERSATION_ID"], "hello")
        assert sent["senderId"] == exported["RTM_CUSTOMER_ID"]
        reply = await staff.send_message(exported["RTM_CONVERSATION_ID"], "hi")
        assert reply["senderId"] == exported["RTM_USER_ID"]
        assert await customer.get_unread_count() == 1
        conversation = await staff._api(
            "GET", f"/api/conversations/{exported['RTM_CONVERSATION_ID']}"
        )
        assert conversation["assignedUserId"] == exported["RTM_USER_ID"]  # delivery status
