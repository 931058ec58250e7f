"""Both official clients behind one small interface, for the compatibility tests.

``JsClient`` runs ``js/run.mjs`` (one ``@supabase/realtime-js`` RealtimeClient) in a Node
subprocess; ``PyClient`` wraps realtime-py's ``AsyncRealtimeClient`` in this process. Each records
what its client observes as plain dict events in an ``EventLog``, with the same shapes on both
sides:

    {"ev": "status", "channel": name, "status": "SUBSCRIBED" | "CHANNEL_ERROR" | ..., "error": str}
    {"ev": "broadcast", "channel": name, "event": str, "payload": ..., "meta": ...}
    {"ev": "presence", "channel": name, "kind": "sync" | "join" | "leave", "key"?: str,
     "presences"?: [meta, ...], "state": {key: [meta, ...]}}
    {"ev": "system", "channel": name, "payload": {...}}
    {"ev": "pg", "channel": name, "binding": index, "payload": what the postgres_changes callback
     of the channel's binding number ``index`` received}

realtime-js hands its callback a transformed payload (``eventType``, ``new``, ``old``, ``schema``,
``table``, ``commit_timestamp``, ``errors``), realtime-py the raw one (``data``, ``ids``).

Tests wait for events with ``expect`` (bounded), never with sleeps.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
from realtime import AsyncRealtimeClient, RealtimeSubscribeStates
from realtime.types import RealtimeAcknowledgementStatus, RealtimeChannelOptions

COMPAT_DIR = Path(__file__).resolve().parent
RUNNER = COMPAT_DIR / "js" / "run.mjs"

#: Default bound for one expected event. Everything here is loopback, so a few seconds is ample.
WAIT = 5.0

#: Seconds after a token's ``exp`` by which the server must have closed the channel it holds.
EXPIRY_GRACE = 5.0

#: A broadcast payload exercising non-ASCII text, numbers, nesting and null.
PAYLOAD = {"text": "héllo ✓", "n": 42, "nested": {"list": [1, 2, 3], "none": None}}

Event = dict[str, Any]


class EventLog:
    """Events in arrival order, with a bounded wait for the first one matching a pattern."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[Event] = []
        self._waiters: list[asyncio.Future[None]] = []

    def add(self, event: Event) -> None:
        event.setdefault("at", time.time())  # wall clock, comparable with JWT ``exp``
        self.events.append(event)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def mark(self) -> int:
        """A position in the log; pass it as ``since`` to look only at later events."""
        return len(self.events)

    def find(
        self, since: int = 0, where: Callable[[Event], bool] | None = None, **fields: Any
    ) -> list[Event]:
        """The events after ``since`` whose fields equal ``fields`` and that satisfy ``where``."""
        return [
            e
            for e in self.events[since:]
            if all(e.get(k) == v for k, v in fields.items()) and (where is None or where(e))
        ]

    async def expect(
        self,
        since: int = 0,
        timeout: float = WAIT,
        where: Callable[[Event], bool] | None = None,
        **fields: Any,
    ) -> Event:
        """The first event after ``since`` matching ``fields`` and ``where``, waiting at most
        ``timeout`` seconds for it to arrive."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = self.find(since, where, **fields)
            if found:
                return found[0]
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = "\n  ".join(json.dumps(e, default=str) for e in self.events[since:])
                raise AssertionError(
                    f"{self.name}: no event matching {fields}"
                    f"{' and a predicate' if where else ''} within {timeout} s; seen:\n  {seen}"
                )
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                pass


class JsClient:
    """One realtime-js RealtimeClient in a Node subprocess, driven through ``js/run.mjs``."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.log = EventLog(name)
        self._proc = proc
        self._next_id = 0
        self._stderr: list[str] = []
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    @staticmethod
    def node() -> str:
        found = shutil.which("node")
        if found is None:
            raise RuntimeError("node is not on PATH; the realtime-js tests need Node 20 or newer")
        if not (COMPAT_DIR / "node_modules" / "@supabase" / "realtime-js").is_dir():
            raise RuntimeError(
                "tests/compat/node_modules is missing: run `npm ci --prefix tests/compat` first"
            )
        return found

    @classmethod
    async def start(
        cls,
        url: str,
        apikey: str,
        *,
        vsn: str | None = None,
        access_token: str | None = None,
        name: str = "js",
        lifetime_ms: int = 30_000,
        trace_frames: bool = False,
        trace_payloads: bool = False,
    ) -> JsClient:
        options: dict[str, Any] = {
            "url": url,
            "apikey": apikey,
            "lifetimeMs": lifetime_ms,
            "traceFrames": trace_frames,
            "tracePayloads": trace_payloads,
        }
        if vsn is not None:
            options["vsn"] = vsn
        if access_token is not None:
            options["accessToken"] = access_token
        if os.environ.get("RTM_COMPAT_DEBUG"):
            options["debug"] = True
        proc = await asyncio.create_subprocess_exec(
            cls.node(),
            str(RUNNER),
            json.dumps(options),
            cwd=COMPAT_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        client = cls(f"{name}(vsn={vsn or 'default'})", proc)
        try:
            await client.log.expect(ev="ready", timeout=10)
        except BaseException:
            await client.close()
            raise
        return client

    async def _read_stdout(self) -> None:
        assert self._proc.stdout is not None
        async for raw in self._proc.stdout:
            line = raw.decode().strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = {"ev": "unparsed", "line": line}
            self.log.add(event)
        self.log.add({"ev": "exited"})

    async def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        async for raw in self._proc.stderr:
            self._stderr.append(raw.decode(errors="replace").rstrip())

    def _write(self, command: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(command).encode() + b"\n")

    async def call(self, op: str, timeout: float = WAIT, **fields: Any) -> Any:
        """Run one command and return its result value (raises if the command failed)."""
        self._next_id += 1
        command_id = self._next_id
        since = self.log.mark()
        self._write({"op": op, "id": command_id, **fields})
        result = await self.log.expect(since, timeout, ev="result", id=command_id)
        if "error" in result:
            raise AssertionError(f"{self.name}: {op} failed: {result['error']}")
        return result.get("value")

    def join(
        self,
        channel: str,
        topic: str,
        config: dict[str, Any] | None = None,
        broadcast: tuple[str, ...] = (),
        postgres: list[dict[str, Any]] | None = None,
        join_config: dict[str, Any] | None = None,
    ) -> None:
        """Subscribe (asynchronously: wait for the ``status`` event).

        ``postgres``: postgres_changes bindings, each reported as ``pg`` events. ``join_config``:
        keys merged into the config of the phx_join the client sends (realtime-js keeps only the
        keys it knows, whatever ``config`` holds)."""
        command: dict[str, Any] = {
            "op": "join",
            "channel": channel,
            "topic": topic,
            "config": config or {},
            "broadcast": list(broadcast),
            "postgres": postgres or [],
        }
        if join_config is not None:
            command["joinConfig"] = join_config
        self._write(command)

    async def close(self) -> None:
        """Disconnect and end the subprocess (killing it if it does not end in time)."""
        proc = self._proc
        if proc.returncode is None and proc.stdin is not None and not proc.stdin.is_closing():
            try:
                self._write({"op": "exit"})
                proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
        if proc.stdin is not None:
            proc.stdin.close()
            await proc.stdin.wait_closed()

    @property
    def stderr(self) -> str:
        return "\n".join(self._stderr)


class PyClient:
    """realtime-py's AsyncRealtimeClient, recording what it observes in an ``EventLog``."""

    def __init__(self, url: str, token: str, name: str = "py") -> None:
        self.name = name
        self.log = EventLog(name)
        self.client = AsyncRealtimeClient(url, token=token)
        self.channels: dict[str, Any] = {}

    async def set_auth(self, token: str) -> None:
        await self.client.set_auth(token)

    async def join(
        self,
        channel: str,
        topic: str,
        config: dict[str, Any] | None = None,
        broadcast: tuple[str, ...] = (),
        presence: bool = True,
        postgres: list[dict[str, Any]] | None = None,
        join_config: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        """Subscribe; returns once the join was answered (or failed: see the status events).

        ``postgres``: postgres_changes bindings (``event``, ``schema``, ``table``, ``filter``),
        each reported as ``pg`` events. ``join_config``: keys merged into the config of the
        phx_join the client sends (realtime-py keeps only the keys it knows, whatever ``config``
        holds)."""
        full_config: dict[str, Any] = {
            "broadcast": {"ack": False, "self": False},
            "presence": {"key": "", "enabled": False},
            "private": False,
        }
        full_config.update(config or {})
        options = cast(RealtimeChannelOptions, {"config": full_config, **(params or {})})
        ch = self.client.channel(topic, options)
        self.channels[channel] = ch
        log = self.log

        if join_config is not None:
            # subscribe() replaces the join's config with broadcast, presence, private and
            # postgres_changes; this adds other keys back, as an app would have to.
            push = ch.join_push
            update = push.update_payload

            def update_payload(payload: dict[str, Any]) -> None:
                config = {**payload.get("config", {}), **join_config}
                update({**payload, "config": config})

            push.update_payload = update_payload  # type: ignore[method-assign]

        for index, binding in enumerate(postgres or []):

            def on_change(payload: Any, index: int = index) -> None:
                log.add(
                    {
                        "ev": "pg",
                        "channel": channel,
                        "binding": index,
                        "payload": _jsonable(payload),
                    }
                )

            ch.on_postgres_changes(
                binding["event"],
                on_change,
                table=binding.get("table"),
                schema=binding.get("schema"),
                filter=binding.get("filter"),
            )

        for event in broadcast:

            def on_broadcast(message: Any) -> None:
                log.add(
                    {
                        "ev": "broadcast",
                        "channel": channel,
                        "event": message.get("event"),
                        "payload": message.get("payload"),
                        "meta": message.get("meta"),
                    }
                )

            ch.on_broadcast(event, on_broadcast)

        if presence:

            def on_sync() -> None:
                log.add({"ev": "presence", "channel": channel, "kind": "sync", "state": _state(ch)})

            def on_join(key: str, current: Any, new: Any) -> None:
                log.add(
                    {
                        "ev": "presence",
                        "channel": channel,
                        "kind": "join",
                        "key": key,
                        "presences": _jsonable(new),
                        "state": _state(ch),
                    }
                )

            def on_leave(key: str, current: Any, left: Any) -> None:
                log.add(
                    {
                        "ev": "presence",
                        "channel": channel,
                        "kind": "leave",
                        "key": key,
                        "presences": _jsonable(left),
                        "state": _state(ch),
                    }
                )

            ch.on_presence_sync(on_sync).on_presence_join(on_join).on_presence_leave(on_leave)

        def on_system(payload: Any) -> None:
            log.add({"ev": "system", "channel": channel, "payload": _jsonable(payload)})

        ch.on_system(on_system)

        def on_status(status: RealtimeSubscribeStates, error: Exception | None) -> None:
            log.add(
                {
                    "ev": "status",
                    "channel": channel,
                    "status": status.value if hasattr(status, "value") else str(status),
                    "error": None if error is None else str(error),
                }
            )

        await asyncio.wait_for(ch.subscribe(on_status), 15)

    async def send(
        self, channel: str, event: str, payload: Any, timeout: float = WAIT
    ) -> str | None:
        """Broadcast through the channel. With ``config.broadcast.ack`` returns the reply status
        ("ok" / "error" / "timed out", or "no reply within ..." after ``timeout``); without it
        returns None at once."""
        ch = self.channels[channel]
        push = await ch.push("broadcast", {"type": "broadcast", "event": event, "payload": payload})
        if not ch.params["config"].get("broadcast", {}).get("ack"):
            return None
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def settle(status: str) -> Callable[..., None]:
            def callback(*args: Any) -> None:
                if not done.done():
                    done.set_result(status)

            return callback

        push.receive(RealtimeAcknowledgementStatus.Ok, settle("ok"))
        push.receive(RealtimeAcknowledgementStatus.Error, settle("error"))
        push.receive(RealtimeAcknowledgementStatus.Timeout, settle("timed out"))
        try:
            return await asyncio.wait_for(done, timeout)
        except TimeoutError:
            return f"no reply within {timeout} s"
        finally:
            push.destroy()

    async def track(self, channel: str, meta: dict[str, Any]) -> None:
        await self.channels[channel].track(meta)

    async def untrack(self, channel: str) -> None:
        await self.channels[channel].untrack()

    def presence_state(self, channel: str) -> dict[str, Any]:
        return _state(self.channels[channel])

    def postgres_ids(self, channel: str) -> list[int | None]:
        """The binding ids the server's join reply gave the channel's postgres_changes callbacks."""
        return [cb.id for cb in self.channels[channel].postgres_changes_callbacks]

    def join_payload(self, channel: str) -> dict[str, Any]:
        """The payload of the channel's last phx_join, as the client sent it."""
        return cast(dict[str, Any], _jsonable(self.channels[channel].join_push.payload))

    async def close(self) -> None:
        """Close the socket without leaving (as a dropped client would) and stop every timer."""
        await self.client.close()
        for ch in list(self.channels.values()):
            ch.rejoin_timer.reset()
            ch.join_push.destroy()
            for push in list(ch.messages_waiting_for_ack.values()):
                push.destroy()
            ch.messages_waiting_for_ack.clear()
            for task in list(ch._background_tasks):
                task.cancel()


class Clients:
    """Starts official clients against the test server and remembers them for teardown."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.opened: list[JsClient | PyClient] = []

    async def js(
        self,
        apikey: str,
        *,
        vsn: str | None = None,
        access_token: str | None = None,
        name: str = "js",
        trace_frames: bool = False,
        trace_payloads: bool = False,
    ) -> JsClient:
        """A realtime-js client (vsn None: the client's default, 2.0.0)."""
        client = await JsClient.start(
            self.server.realtime_url,
            apikey,
            vsn=vsn,
            access_token=access_token,
            name=name,
            trace_frames=trace_frames,
            trace_payloads=trace_payloads,
        )
        self.opened.append(client)
        return client

    def py(self, token: str, name: str = "py") -> PyClient:
        """A realtime-py client; it connects on its first join."""
        client = PyClient(self.server.realtime_url, token, name=name)
        self.opened.append(client)
        return client

    async def close(self) -> None:
        for client in reversed(self.opened):
            await client.close()
            if isinstance(client, JsClient) and client.stderr:
                print(f"--- {client.name} stderr ---\n{client.stderr}", file=sys.stderr)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: getattr(o, "__dict__", str(o))))


def _state(ch: Any) -> dict[str, Any]:
    return cast(dict[str, Any], _jsonable(dict(ch.presence_state())))


def metas(state: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The metas under ``key`` in a presence state, without the client-added presence_ref."""
    return [{k: v for k, v in m.items() if k != "presence_ref"} for m in state.get(key, [])]


def unique(prefix: str) -> str:
    """A topic name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def unauthorized(topic: str) -> str:
    """The join error reason for a forbidden sub-topic (no ``realtime:`` prefix)."""
    return f"Unauthorized: You do not have permissions to read from this Channel topic: {topic}"


async def first_status(
    client: JsClient | PyClient, channel: str, since: int = 0, timeout: float = WAIT
) -> Event:
    """The first subscribe-callback status of ``channel`` after ``since``."""
    return await client.log.expect(since, timeout, ev="status", channel=channel)


# -- postgres_changes -----------------------------------------------------------------------

#: ``commit_timestamp`` as the protocol has it: UTC, to the millisecond.
COMMIT_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

#: A message written with plain SQL, as a customer of the conversation.
INSERT_MESSAGE = (
    "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
    "VALUES ($1, 'customer', $2, $3) RETURNING to_jsonb(customer_messages)"
)


def binding(event: str, table: str, filter: str | None = None) -> dict[str, Any]:
    """A postgres_changes binding on a table of schema public."""
    spec: dict[str, Any] = {"event": event, "schema": "public", "table": table}
    if filter is not None:
        spec["filter"] = filter
    return spec


def _row(value: Any) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(value) if isinstance(value, str) else value)


async def insert_message(
    pool: Any, conversation_id: uuid.UUID, customer_id: uuid.UUID, content: str
) -> dict[str, Any]:
    """Insert a customer message with plain SQL; return the row as the change feed carries it."""
    return _row(await pool.fetchval(INSERT_MESSAGE, conversation_id, customer_id, content))


async def sql_row(pool: Any, query: str, *args: Any) -> dict[str, Any]:
    """Run a statement returning one ``to_jsonb(row)``; return that row."""
    return _row(await pool.fetchval(query, *args))


async def stamped_head(pool: Any, timeout: float = WAIT) -> int:
    """The feed's last position, once every change committed so far has been stamped
    (``rtm.change_queue`` is empty): the changes after it are exactly the later commits."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await pool.fetchval("SELECT count(*) FROM rtm.change_queue"):
        if loop.time() > deadline:
            raise AssertionError(f"rtm.change_queue not drained within {timeout} s")
        await asyncio.sleep(0.02)
    head: int = await pool.fetchval("SELECT last_pos FROM rtm.change_feed_state")
    return head


async def routed_head(pool: Any, http_url: str, timeout: float = WAIT) -> int:
    """:func:`stamped_head`, once the server's change feed has also routed up to it: a channel
    joined after this starts live past every change committed so far (an earlier change could
    otherwise still arrive live, just after "Subscribed to PostgreSQL")."""
    head = await stamped_head(pool, timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{http_url}/metrics") as response:
                text = await response.text()
            line = next(x for x in text.splitlines() if x.startswith("rtm_change_feed_position"))
            if float(line.split()[-1]) >= head:
                return head
            if loop.time() > deadline:
                raise AssertionError(f"the change feed did not route up to {head} in {timeout} s")
            await asyncio.sleep(0.02)
