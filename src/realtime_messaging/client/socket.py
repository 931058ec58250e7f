"""The client socket: Phoenix channels over ``websockets``, on the project's sans-I/O frame codec.

It keeps one connection up for as long as it is open: a heartbeat with a reply timeout detects a
half-open connection, a lost connection is replaced forever with capped exponential backoff and
jitter, and every channel is rejoined with ``config.resume.position`` set to the last change
position it saw, so nothing committed meanwhile is missed; replayed duplicates are dropped.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from ..protocol.errors import ProtocolError
from ..protocol.frames import Message, Vsn, decode_text, encode
from .errors import (
    AuthenticationError,
    ChannelClosedError,
    ChannelError,
    ConnectionLostError,
    HeartbeatTimeoutError,
    HistoryLostError,
    JoinRefusedError,
    RealtimeError,
)

log = logging.getLogger(__name__)

VSN = Vsn.V2
PHOENIX = "phoenix"


class ChannelState(enum.Enum):
    CLOSED = "closed"
    JOINING = "joining"
    JOINED = "joined"
    ERRORED = "errored"
    LEAVING = "leaving"


#: The first retries after a connection is lost, like Phoenix's own client: a restarted or
#: redeployed server is usually back within seconds, and a client that waits a doubling delay
#: from the start comes back long after it. The last step repeats for the rest of the quick
#: phase: a client waits at most that long once the server accepts again (a refused connection
#: costs the server nothing but a reset), and 10 to 20 attempts a second is no tight loop.
QUICK_RETRIES = (0.01, 0.05, 0.1)
#: The quick phase's longest wait after a connection refused outright (nothing listens on the
#: port: the server is restarting). Such an attempt never reaches the server's process (the
#: kernel resets it), so retrying twice as often costs the server nothing, and brings a
#: client back at most 50 ms after the restarted server listens: 1,000 SDK clients were all
#: subscribed again 199-230 ms after it accepted, against 330-381 ms at 100 ms (issue 16,
#: `benchmarks/sdk`, runs alternating; a refused attempt costs the client about 37 us of CPU).
#: An attempt the server (or a proxy in front of it) answered with an error, or did not answer
#: in time, keeps the 100 ms step: that one costs it a request.
REFUSED_STEP = 0.05
#: How long retries stay quick (every QUICK_RETRIES[-1] s at most) before backing off, counted
#: from the loss of a connection that had been up for at least as long.
QUICK_PHASE = 5.0


def _worth_reporting(attempt: int) -> bool:
    """Failed attempts of one outage reported to ``on_error``: the first, then the 8th, 16th,
    32nd… (a thousand clients retrying every 100 ms would otherwise flood the handlers)."""
    return attempt == 0 or (attempt >= 7 and (attempt + 1) & attempt == 0)


def reconnect_delay(
    attempt: int, down_for: float, base: float, cap: float, *, refused: bool = False
) -> float:
    """The wait before reconnect attempt ``attempt`` (0-based), ``down_for`` s after the loss:
    quick retries with jitter first (at most :data:`REFUSED_STEP` apart when the last attempt
    was ``refused`` outright), then capped exponential backoff from ``base``.

    The backoff waits about as long as it has lasted (``base`` at first), so the time spent
    backing off grows 1.5 to 2 times with each wait: exponential without counting the quick
    phase's attempts, whose number depends on how long each one took (counting them made the
    first wait after the quick phase the cap).
    """
    if down_for < QUICK_PHASE:
        step = QUICK_RETRIES[min(attempt, len(QUICK_RETRIES) - 1)]
        if refused:
            step = min(step, REFUSED_STEP)
        return min(cap, step) * random.uniform(0.5, 1.0)
    return min(cap, max(base, down_for - QUICK_PHASE)) * random.uniform(0.5, 1.0)


def after_session(attempt: int, lost_at: float, opened: float, now: float) -> tuple[int, float]:
    """The retry state (attempt, time of the loss) once a connection opened at ``opened`` ends.

    One that stayed up for :data:`QUICK_PHASE` was healthy: the retries start afresh, quick.
    One that a server keeps closing at once counts on towards the backoff instead.
    """
    if now - opened >= QUICK_PHASE:
        return 0, now
    return attempt, lost_at


def proxy_option(url: str) -> dict[str, Any]:
    """``connect``'s proxy, resolved now: websockets 15 otherwise looks it up in the
    environment at every attempt, four fifths of what a refused attempt costs (a thousand
    clients retrying while a server restarts). Resolved once per outage, so a changed
    environment still counts; websockets 14 has no proxy support (nothing to pass)."""
    try:
        from websockets.uri import get_proxy, parse_uri
    except ImportError:
        return {}
    return {"proxy": get_proxy(parse_uri(url))}


def _refused(exc: InvalidStatus) -> AuthenticationError | None:
    """The server's refusal of the key (401/403 with its JSON ``error``), else None."""
    response = exc.response
    if response.status_code not in (401, 403):
        return None
    message = response.reason_phrase
    try:
        body = json.loads(response.body or b"")
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            message = body["error"]
    except ValueError:
        pass
    return AuthenticationError(response.status_code, message)


class SocketChannel:
    """One channel of the socket: its join configuration, state and last change position."""

    def __init__(
        self,
        topic: str,
        *,
        postgres_changes: list[dict[str, Any]],
        on_change: Callable[[dict[str, Any]], None],
        on_error: Callable[[RealtimeError], None],
        on_message: Callable[[Message], None] | None = None,
        presence_key: str = "",
        on_rejoin: Callable[[bool], None] | None = None,
    ) -> None:
        self.topic = topic if topic.startswith("realtime:") else f"realtime:{topic}"
        self.postgres_changes = postgres_changes
        self.on_change = on_change
        self.on_error = on_error
        self.on_message = on_message
        self.presence_key = presence_key
        #: Called with whether history was complete each time a join after the first one
        #: has its PostgreSQL subscription confirmed (after the replay).
        self.on_rejoin = on_rejoin
        self.state = ChannelState.CLOSED
        self.join_ref: str | None = None
        #: The last ``data.position`` delivered on this channel (the resume point).
        self.last_position: int | None = None
        self.wanted = True
        #: Whether a join of this channel was confirmed already (the next one is a rejoin).
        self._subscribed = False
        #: The server said, during the current join, that history after the position is lost.
        self._history_lost = False
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def name(self) -> str:
        return self.topic.removeprefix("realtime:")

    def join_payload(self, access_token: str | None) -> dict[str, Any]:
        config: dict[str, Any] = {
            # Acknowledged: the SDK's own broadcasts (typing) wait for the server's verdict.
            "broadcast": {"ack": True, "self": False},
            "presence": {"key": self.presence_key, "enabled": bool(self.presence_key)},
            "private": False,
            "postgres_changes": self.postgres_changes,
        }
        if self.last_position is not None:
            config["resume"] = {"position": self.last_position}
        self._history_lost = False  # this join's verdict follows its reply
        payload: dict[str, Any] = {"config": config}
        if access_token:
            payload["access_token"] = access_token
        return payload

    async def wait_ready(self, timeout: float) -> None:
        """Wait for the first join (and its PostgreSQL subscription) to succeed or fail."""
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._ready)

    def _settle(self, error: BaseException | None = None) -> None:
        if self._ready.done():
            return
        if error is None:
            self._ready.set_result(None)
        else:
            self._ready.set_exception(error)
            self._ready.exception()  # mark retrieved: nobody may be waiting any more

    def accept_change(self, payload: Any) -> None:
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, dict):
            return
        position = data.get("position")
        if isinstance(position, int):
            if self.last_position is not None and position <= self.last_position:
                return  # already delivered (a replay overlapping what we saw)
            self.last_position = position
        self.on_change(data)

    def accept_system(self, payload: Any) -> None:
        if not isinstance(payload, dict):
            return
        status, message = payload.get("status"), str(payload.get("message", ""))
        if payload.get("extension") != "postgres_changes":
            if status == "error":
                self.on_error(ChannelError(self.name, message))
            return
        if status != "ok":
            error = ChannelError(self.name, message)
            self._settle(error)
            self.on_error(error)
            return
        if payload.get("history_lost"):
            self._history_lost = True  # "Subscribed to PostgreSQL" follows
            position = payload.get("position")
            self.on_error(
                HistoryLostError(self.name, position if isinstance(position, int) else None)
            )
            return
        # Complete when the join resumed from a position and nothing after it was lost.
        complete = self.last_position is not None and not self._history_lost
        self._history_lost = False
        position = payload.get("position")
        if isinstance(position, int) and (
            self.last_position is None or position > self.last_position
        ):
            # A server that says where the subscription starts lets an idle channel resume too.
            self.last_position = position
        self._settle()
        if self._subscribed and self.on_rejoin is not None:
            self.on_rejoin(complete)
        self._subscribed = True


class RealtimeSocket:
    """One WebSocket connection shared by every channel, kept up until :meth:`close`."""

    def __init__(
        self,
        url: str,
        apikey: str,
        *,
        access_token: str | None = None,
        heartbeat_interval: float = 25.0,
        heartbeat_timeout: float = 10.0,
        join_timeout: float = 10.0,
        reconnect_base: float = 0.5,
        reconnect_max: float = 30.0,
        on_error: Callable[[RealtimeError], None] | None = None,
    ) -> None:
        self.url = url
        self.apikey = apikey
        self.access_token = access_token
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.join_timeout = join_timeout
        self.reconnect_base = reconnect_base
        self.reconnect_max = reconnect_max
        self.on_error = on_error
        self.channels: dict[str, SocketChannel] = {}
        #: How many connections were opened (1 + reconnects).
        self.connections = 0
        self._ws: ClientConnection | None = None
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._refs = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._session_tasks: set[asyncio.Task[Any]] = set()
        self._broken: asyncio.Future[BaseException] | None = None
        self._closing = False
        self.connected = asyncio.Event()

    # -- public --------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}apikey={self.apikey}&vsn={VSN.value}"

    def start(self) -> None:
        if self._task is None and not self._closing:
            self._task = asyncio.create_task(self._run(), name="rtm-socket")

    async def join(self, channel: SocketChannel) -> None:
        """Add a channel and wait until it is joined (raises what refused it, or TimeoutError)."""
        old = self.channels.get(channel.topic)
        if old is not None:
            old.wanted = False
        self.channels[channel.topic] = channel
        self.start()
        if self._ws is not None:
            self._spawn(self._join(self._ws, channel))
        try:
            await channel.wait_ready(self.join_timeout)
        except BaseException:
            channel.wanted = False
            if self.channels.get(channel.topic) is channel:
                del self.channels[channel.topic]
            raise

    async def leave(self, channel: SocketChannel) -> None:
        channel.wanted = False
        if self.channels.get(channel.topic) is channel:
            del self.channels[channel.topic]
        ws = self._ws
        if ws is not None and channel.state is ChannelState.JOINED:
            channel.state = ChannelState.LEAVING
            try:
                await self._request(
                    ws,
                    Message(channel.topic, "phx_leave", {}, None, channel.join_ref),
                    timeout=min(2.0, self.join_timeout),
                )
            except (TimeoutError, ConnectionClosed, ConnectionLostError):
                pass
        channel.state = ChannelState.CLOSED
        channel._settle(ChannelClosedError(channel.name, "left"))

    async def set_auth(self, token: str | None) -> None:
        """Use ``token`` from now on; push it to every joined channel, rejoin closed ones."""
        self.access_token = token
        ws = self._ws
        if ws is None:
            return
        for channel in list(self.channels.values()):
            if channel.state is ChannelState.JOINED and token:
                push = Message(
                    channel.topic,
                    "access_token",
                    {"access_token": token},
                    self._next_ref(),
                    channel.join_ref,
                )
                await self._send(ws, push)
            elif channel.state in (ChannelState.CLOSED, ChannelState.ERRORED):
                self._spawn(self._join(ws, channel))

    async def push(self, channel: SocketChannel, event: str, payload: Any) -> Message:
        """Send ``event`` on a joined channel and wait for its reply."""
        ws = self._ws
        if ws is None or channel.state is not ChannelState.JOINED:
            raise ConnectionLostError(f"{channel.name} is not joined")
        return await self._request(
            ws, Message(channel.topic, event, payload, None, channel.join_ref)
        )

    async def close(self) -> None:
        self._closing = True
        for channel in self.channels.values():
            channel.wanted = False
            channel._settle(ChannelClosedError(channel.name, "socket closed"))
        ws = self._ws
        if ws is not None:
            try:
                async with asyncio.timeout(1.0):
                    await ws.close()
            except TimeoutError:
                ws.transport.abort()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    # -- the connection loop -------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        lost_at = time.monotonic()
        proxy = proxy_option(self.endpoint)
        while not self._closing:
            try:
                ws = await connect(
                    self.endpoint,
                    ping_interval=None,
                    open_timeout=self.join_timeout,
                    close_timeout=1.0,
                    max_size=16 * 1024 * 1024,
                    **proxy,
                )
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, WebSocketException) as exc:
                refused = _refused(exc) if isinstance(exc, InvalidStatus) else None
                if refused is not None:
                    # The key is wrong: retrying cannot help. Fail every waiting join now,
                    # and stop; the next join tries again (with a key that may be fixed).
                    for channel in list(self.channels.values()):
                        channel._settle(refused)
                    self._report(refused)
                    self._task = None
                    return
                if _worth_reporting(attempt):
                    self._report(ConnectionLostError(f"cannot connect: {exc!r}"))
                refused_outright = isinstance(exc, ConnectionRefusedError)
                await asyncio.sleep(self._retry_delay(attempt, lost_at, refused_outright))
                attempt += 1
                continue
            started = time.monotonic()
            self.connections += 1
            reason = await self._session(ws)
            if self._closing:
                return
            self._report(reason)
            attempt, lost_at = after_session(attempt, lost_at, started, time.monotonic())
            proxy = proxy_option(self.endpoint)
            await asyncio.sleep(self._retry_delay(attempt, lost_at))
            attempt += 1

    def _retry_delay(self, attempt: int, lost_at: float, refused: bool = False) -> float:
        return reconnect_delay(
            attempt,
            time.monotonic() - lost_at,
            self.reconnect_base,
            self.reconnect_max,
            refused=refused,
        )

    async def _session(self, ws: ClientConnection) -> ConnectionLostError:
        """Serve one connection until it breaks; return why it ended."""
        self._ws = ws
        self._broken = asyncio.get_running_loop().create_future()
        self.connected.set()
        broken = self._broken
        reader = asyncio.create_task(self._read(ws))
        heartbeat = asyncio.create_task(self._heartbeat(ws))
        watched: set[asyncio.Future[Any]] = {reader, heartbeat, broken}
        for channel in list(self.channels.values()):
            if channel.wanted:
                self._spawn(self._join(ws, channel))
        reason: ConnectionLostError
        try:
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            first = done.pop()
            exc = first.result() if first is broken else first.exception()
            if isinstance(exc, ConnectionLostError):
                reason = exc
            elif exc is not None:
                reason = ConnectionLostError(f"connection failed: {exc!r}")
            else:
                reason = ConnectionLostError(
                    f"connection closed: {ws.close_code} {ws.close_reason}"
                )
        finally:
            self.connected.clear()
            self._ws = None
            for task in (reader, heartbeat, *self._session_tasks):
                task.cancel()
            await asyncio.gather(reader, heartbeat, *self._session_tasks, return_exceptions=True)
            self._session_tasks.clear()
            ws.transport.abort()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionLostError("connection lost"))
                    future.exception()
            self._pending.clear()
            for channel in self.channels.values():
                if channel.state is not ChannelState.CLOSED:
                    channel.state = ChannelState.ERRORED
        return reason

    def _break(self, error: ConnectionLostError) -> None:
        if self._broken is not None and not self._broken.done():
            self._broken.set_result(error)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[Any] = asyncio.create_task(coro)
        self._session_tasks.add(task)
        task.add_done_callback(self._session_tasks.discard)
        task.add_done_callback(self._check_task)

    def _check_task(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._report(exc if isinstance(exc, RealtimeError) else RealtimeError(repr(exc)))

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            if isinstance(raw, bytes):
                continue  # binary user broadcasts: not used by the SDK
            try:
                message = decode_text(VSN, raw)
            except ProtocolError as exc:
                self._report(RealtimeError(f"malformed frame from the server: {exc}"))
                continue
            try:
                self._dispatch(message)
            except Exception as exc:  # a bug must not kill the connection silently
                log.exception("dispatching %s failed", message.event)
                self._report(RealtimeError(f"dispatching {message.event} failed: {exc!r}"))

    async def _heartbeat(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._request(
                    ws, Message(PHOENIX, "heartbeat", {}), timeout=self.heartbeat_timeout
                )
            except TimeoutError:
                raise HeartbeatTimeoutError(
                    f"no heartbeat reply within {self.heartbeat_timeout} s"
                ) from None

    # -- frames --------------------------------------------------------------------------

    def _next_ref(self) -> str:
        return str(next(self._refs))

    async def _send(self, ws: ClientConnection, message: Message) -> None:
        try:
            async with asyncio.timeout(self.heartbeat_timeout):
                await ws.send(encode(VSN, message).decode())
        except TimeoutError:
            self._break(HeartbeatTimeoutError("the connection does not take writes"))
            raise ConnectionLostError("send timed out") from None
        except ConnectionClosed as exc:
            raise ConnectionLostError(f"connection closed: {exc}") from None

    async def _request(
        self, ws: ClientConnection, message: Message, *, timeout: float | None = None
    ) -> Message:
        ref = message.ref or self._next_ref()
        message = Message(message.topic, message.event, message.payload, ref, message.join_ref)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        try:
            await self._send(ws, message)
            async with asyncio.timeout(self.join_timeout if timeout is None else timeout):
                return await future
        finally:
            self._pending.pop(ref, None)

    async def _join(self, ws: ClientConnection, channel: SocketChannel) -> None:
        if not channel.wanted:
            return
        ref = self._next_ref()
        channel.join_ref = ref
        channel.state = ChannelState.JOINING
        join = Message(channel.topic, "phx_join", channel.join_payload(self.access_token), ref, ref)
        try:
            reply = await self._request(ws, join)
        except TimeoutError:
            # A join the server never answers: treat the connection as broken and start over.
            self._break(ConnectionLostError(f"join of {channel.name} timed out"))
            return
        except ConnectionLostError:
            return
        if channel.join_ref != ref or not channel.wanted:
            return
        payload = reply.payload if isinstance(reply.payload, dict) else {}
        if payload.get("status") == "ok":
            channel.state = ChannelState.JOINED
            if not channel.postgres_changes:
                channel._settle()
            return
        response = payload.get("response")
        reason = response.get("reason") if isinstance(response, dict) else None
        channel.state = ChannelState.ERRORED
        error = JoinRefusedError(channel.name, str(reason or response))
        channel._settle(error)
        channel.on_error(error)

    def _dispatch(self, message: Message) -> None:
        if message.event == "phx_reply":
            future = self._pending.get(message.ref or "")
            if future is not None and not future.done():
                future.set_result(message)
            return
        channel = self.channels.get(message.topic)
        if channel is None:
            return
        if message.join_ref is not None and message.join_ref != channel.join_ref:
            return  # from an earlier join of this topic
        event = message.event
        if event == "postgres_changes":
            channel.accept_change(message.payload)
        elif event == "system":
            channel.accept_system(message.payload)
        elif event == "phx_close":
            if channel.state is not ChannelState.LEAVING:
                channel.state = ChannelState.CLOSED
                error = ChannelClosedError(channel.name, "closed by the server")
                channel._settle(error)
                channel.on_error(error)
        elif event == "phx_error":
            channel.state = ChannelState.ERRORED
            channel.on_error(ChannelError(channel.name, "channel crashed on the server; rejoining"))
            if self._ws is not None:
                self._spawn(self._join(self._ws, channel))
        elif channel.on_message is not None:
            channel.on_message(message)

    def _report(self, error: BaseException) -> None:
        if not isinstance(error, RealtimeError):
            error = RealtimeError(repr(error))
        delivered = False
        if isinstance(error, ConnectionLostError):
            for channel in list(self.channels.values()):
                if channel.wanted:
                    channel.on_error(error)
                    delivered = True
        if self.on_error is not None:
            self.on_error(error)
            delivered = True
        if not delivered:
            log.warning("realtime: %s", error)
