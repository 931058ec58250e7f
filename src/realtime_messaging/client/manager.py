"""``RealtimeMessagingManager``: the documented subscriptions and REST calls, in snake_case."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import jwt

from .errors import ApiError, ConnectionLostError, RealtimeError
from .events import (
    ConversationEvent,
    DeliveryStatusEvent,
    Event,
    MessageEvent,
    PresenceEvent,
    ReadReceiptEvent,
    RejoinEvent,
    TypingIndicatorEvent,
    TypingTransitions,
    event_from_change,
)
from .search import SearchResult, query_string
from .socket import ChannelState, RealtimeSocket, SocketChannel

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[None] | None]

HANDLERS = (
    "on_message",
    "on_read_receipt",
    "on_typing",
    "on_delivery_status",
    "on_presence",
    "on_conversation",
    "on_rejoin",
    "on_error",
)
_HANDLER_OF: dict[type, str] = {
    MessageEvent: "on_message",
    ReadReceiptEvent: "on_read_receipt",
    TypingIndicatorEvent: "on_typing",
    DeliveryStatusEvent: "on_delivery_status",
    PresenceEvent: "on_presence",
    ConversationEvent: "on_conversation",
    RejoinEvent: "on_rejoin",
}
_CLOSED = object()
#: What :meth:`RealtimeMessagingManager.connect` joins (with a random suffix): a topic of its
#: own, carrying nothing.
CONNECTION_TOPIC = "rtm:connection"
ITER_BUFFER = 10_000
ACKED_MEMORY = 10_000
#: The most customers one :meth:`RealtimeMessagingManager.subscribe_to_customers_presence`
#: names: the server's bound on the values of one ``in.(…)`` filter.
PRESENCE_OF_MOST = 100
# Pauses before the retries of an HTTP call whose connection failed: a killed process's
# listener can still take (and then reset) connections for a moment after it died.
_RECONNECT_DELAYS = (0.0, 0.1, 0.5)


def socket_url(http_url: str) -> str:
    """``http(s)://host[/base]`` -> ``ws(s)://host[/base]/realtime/v1/websocket``."""
    parts = urlsplit(http_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/") + "/realtime/v1/websocket"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def _bindings(tables: Iterable[tuple[str, str]], filter_: str | None) -> list[dict[str, Any]]:
    out = []
    for table, event in tables:
        binding: dict[str, Any] = {"event": event, "schema": "public", "table": table}
        if filter_:
            binding["filter"] = filter_
        out.append(binding)
    return out


MESSAGE_TABLES = (
    # UPDATE too: edits and deletes (tombstones) of messages already sent.
    ("customer_messages", "INSERT"),
    ("customer_messages", "UPDATE"),
    ("message_read_receipts", "INSERT"),
    ("message_typing_indicators", "*"),
    ("message_delivery_status", "*"),
)
#: A user's own messages topic also carries the conversations' changes (status, assignment),
#: for live lists and counts. Not ``conversation:<id>``: its filter names ``conversation_id``,
#: which the conversations table does not have (the server would refuse the whole join).
OWN_TABLES = (*MESSAGE_TABLES, ("conversations", "*"))


class Subscription:
    """One subscribed channel: handlers are called in order; also an async iterator of events.

    Iterating yields the typed events, and a :class:`RejoinEvent` after each rejoin; errors that
    need attention (a refused or closed channel, lost history) are raised by the iterator in place,
    transient connection losses are not (they go to ``on_error`` only). Iteration ends after
    ``unsubscribe``.
    """

    def __init__(
        self, manager: RealtimeMessagingManager, name: str, handlers: dict[str, Handler | None]
    ) -> None:
        unknown = set(handlers) - set(HANDLERS)
        if unknown:
            raise TypeError(f"unknown handlers: {', '.join(sorted(unknown))}")
        self.manager = manager
        self.channel_name = name
        self.handlers = {k: v for k, v in handlers.items() if v is not None}
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._iter: asyncio.Queue[Any] = asyncio.Queue(ITER_BUFFER)
        self._dispatcher = asyncio.create_task(self._dispatch(), name=f"rtm-{name}")
        self.channel: SocketChannel | None = None
        self._typing = TypingTransitions()

    @property
    def state(self) -> str:
        """``joining``, ``joined``, ``errored`` (reconnecting), ``closed`` or ``leaving``."""
        return self.channel.state.value if self.channel else ChannelState.CLOSED.value

    @property
    def last_position(self) -> int | None:
        return self.channel.last_position if self.channel else None

    def _on_change(self, data: dict[str, Any]) -> None:
        try:
            event = event_from_change(data)
        except (KeyError, TypeError, ValueError) as exc:
            self._on_error(RealtimeError(f"unexpected change from the server: {exc!r}"))
            return
        if isinstance(event, TypingIndicatorEvent):
            # One start and one stop per burst, and not this user's own unless asked for.
            if self.manager._own_typing(event) or not self._typing.accept(event):
                return
        if event is not None:
            self._inbox.put_nowait(event)

    def _on_error(self, error: RealtimeError) -> None:
        self._inbox.put_nowait(error)

    def _on_rejoin(self, complete: bool) -> None:
        kind, _, rest = self.channel_name.partition(":")
        conversation = rest if kind in ("conversation", "presence") else None
        position = self.channel.last_position if self.channel is not None else None
        self._inbox.put_nowait(RejoinEvent(self.channel_name, complete, conversation, position))

    def _offer(self, item: Any) -> None:
        if self._iter.full():
            self._iter.get_nowait()  # nobody iterates: keep the newest
        self._iter.put_nowait(item)

    async def _dispatch(self) -> None:
        while True:
            item = await self._inbox.get()
            if item is _CLOSED:
                self._offer(_CLOSED)
                return
            if isinstance(item, Exception):
                if not isinstance(item, ConnectionLostError):
                    self._offer(item)
                await self._call_error(item)
                continue
            self._offer(item)
            if not isinstance(item, RejoinEvent):
                self.manager._observe(item)
            handler = self.handlers.get(_HANDLER_OF[type(item)])
            if handler is None:
                continue
            try:
                result = handler(item)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                await self._call_error(exc)

    async def _call_error(self, error: Exception) -> None:
        handler = self.handlers.get("on_error") or self.manager.on_error
        if handler is None:
            log.warning("realtime %s: %s", self.channel_name, error)
            return
        try:
            result = handler(error)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("on_error handler of %s failed", self.channel_name)

    def __aiter__(self) -> AsyncIterator[Event | RejoinEvent]:
        return self

    async def __anext__(self) -> Event | RejoinEvent:
        item = await self._iter.get()
        if item is _CLOSED:
            self._iter.put_nowait(_CLOSED)
            raise StopAsyncIteration
        if isinstance(item, Exception):
            raise item
        event: Event | RejoinEvent = item
        return event

    async def _close(self) -> None:
        self._inbox.put_nowait(_CLOSED)
        try:
            async with asyncio.timeout(5):
                await self._dispatcher
        except TimeoutError:
            self._dispatcher.cancel()


class RealtimeMessagingManager:
    """Subscriptions to the messaging topics plus the REST calls of the documented API.

    ``url`` is the server's HTTP base URL, ``key`` its anon key (used as the socket's ``apikey``),
    ``access_token`` the user's token (a staff JWT or a customer's portal token): it names the
    channels' identity and authenticates the REST calls.

    Typing events come as a UI wants them: one ``is_typing=True`` when a participant starts
    and one ``is_typing=False`` when they stop (refreshes and the row's later deletion are not
    events), and only the others' typing: ``include_own_typing=True`` also reports the typing of
    the token's owner (from any of their clients).
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        access_token: str | None = None,
        on_error: Handler | None = None,
        auto_ack_delivery: bool = True,
        include_own_typing: bool = False,
        heartbeat_interval: float = 25.0,
        heartbeat_timeout: float = 10.0,
        join_timeout: float = 10.0,
        reconnect_base: float = 0.5,
        reconnect_max: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.access_token = access_token
        self.on_error = on_error
        self.auto_ack_delivery = auto_ack_delivery
        self.include_own_typing = include_own_typing
        #: ``_me()`` of the token it was read from: every typing change asks it.
        self._me_of: tuple[str, tuple[str, str | None] | None] | None = None
        self.socket = RealtimeSocket(
            socket_url(self.url),
            key,
            access_token=access_token,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            join_timeout=join_timeout,
            reconnect_base=reconnect_base,
            reconnect_max=reconnect_max,
            on_error=self._socket_error,
        )
        self.subscriptions: dict[str, Subscription] = {}
        #: Topics made by :meth:`subscribe_to_customers_presence` and
        #: :meth:`subscribe_to_staff_presence` so far (a set each).
        self._presence_lists = 0
        self._http: aiohttp.ClientSession | None = None
        #: Message ids acknowledged, oldest first (bounded: a replay older than this is rare,
        #: and acknowledging twice is harmless).
        self._acked: dict[str, None] = {}
        self._to_ack: list[str] = []
        self._ack_task: asyncio.Task[None] | None = None
        self._ack_batches: set[asyncio.Task[None]] = set()
        self._closed = False
        self._keepalive: SocketChannel | None = None

    async def __aenter__(self) -> RealtimeMessagingManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- subscriptions -------------------------------------------------------------------

    async def subscribe_to_customer_messages(
        self, customer_id: object, **handlers: Handler | None
    ) -> Subscription:
        """The customer's messages, receipts, typing, delivery status and conversation changes."""
        return await self._subscribe(f"customer:{customer_id}:messages", OWN_TABLES, None, handlers)

    async def subscribe_to_staff_messages(
        self, user_id: object, **handlers: Handler | None
    ) -> Subscription:
        """Every conversation's events and changes, as the staff user sees them."""
        return await self._subscribe(f"staff:{user_id}:messages", OWN_TABLES, None, handlers)

    async def subscribe_to_conversation(
        self, conversation_id: object, **handlers: Handler | None
    ) -> Subscription:
        return await self._subscribe(
            f"conversation:{conversation_id}",
            MESSAGE_TABLES,
            f"conversation_id=eq.{conversation_id}",
            handlers,
        )

    async def subscribe_to_presence(
        self,
        conversation_id: object,
        user_id: object = None,
        customer_id: object = None,
        on_presence: Handler | None = None,
        **handlers: Handler | None,
    ) -> Subscription:
        """Presence changes (``PresenceEvent``) on ``presence:<conversation_id>``.

        The server decides which rows an identity sees (staff: every row; a customer: their own).
        """
        return await self._subscribe(
            f"presence:{conversation_id}",
            (("user_presence", "*"),),
            None,
            {**handlers, "on_presence": on_presence},
        )

    async def subscribe_to_customers_presence(
        self,
        customer_ids: Iterable[object],
        on_presence: Handler | None = None,
        **handlers: Handler | None,
    ) -> Subscription:
        """Presence changes (``PresenceEvent``) of these customers, live: a staff list's
        customers, not only the open conversation's. One channel on a topic of this manager's
        own, filtered to them on the server (``customer_id=in.(…)``): the first
        :data:`PRESENCE_OF_MOST` of them, values that are not UUIDs left out. A new set is a
        new subscription (unsubscribe the old one). Staff and the service role see these rows;
        a customer sees only its own."""
        return await self._presence_of(
            "customers", "customer_id", customer_ids, on_presence, handlers
        )

    async def subscribe_to_staff_presence(
        self,
        user_ids: Iterable[object],
        on_presence: Handler | None = None,
        **handlers: Handler | None,
    ) -> Subscription:
        """Presence changes (``PresenceEvent``) of these staff users, live: a customer's list
        of conversations shows its agents'. Filtered on the server (``user_id=in.(…)``), the
        first :data:`PRESENCE_OF_MOST`, as for customers. Staff see every staff row; a customer
        sees those of the staff of its conversations (assigned to one or who wrote in one) as
        of the subscription's join, so a new agent is a new set: subscribe again."""
        return await self._presence_of("staff", "user_id", user_ids, on_presence, handlers)

    async def _presence_of(
        self,
        kind: str,
        column: str,
        values: Iterable[object],
        on_presence: Handler | None,
        handlers: dict[str, Handler | None],
    ) -> Subscription:
        ids: dict[str, None] = {}  # in the order given, once each
        for value in values:
            try:
                ids[str(uuid.UUID(str(value)))] = None
            except ValueError:
                continue
        chosen = list(ids)[:PRESENCE_OF_MOST]
        self._presence_lists += 1
        return await self._subscribe(
            f"{kind}-presence:{self._presence_lists}",
            (("user_presence", "*"),),
            f"{column}=in.({','.join(chosen)})",
            {**handlers, "on_presence": on_presence},
        )

    async def _subscribe(
        self,
        name: str,
        tables: Iterable[tuple[str, str]],
        filter_: str | None,
        handlers: dict[str, Handler | None],
    ) -> Subscription:
        if name in self.subscriptions:
            await self.unsubscribe(name)
        subscription = Subscription(self, name, handlers)
        channel = SocketChannel(
            name,
            postgres_changes=_bindings(tables, filter_),
            on_change=subscription._on_change,
            on_error=subscription._on_error,
            on_rejoin=subscription._on_rejoin,
        )
        subscription.channel = channel
        self.subscriptions[name] = subscription
        try:
            await self.socket.join(channel)
        except BaseException:
            self.subscriptions.pop(name, None)
            await subscription._close()
            raise
        return subscription

    async def connect(self) -> None:
        """Open the socket now and keep it open, subscribed or not.

        The server counts a staff user or customer present while a connection of theirs is
        open (docs/presence.md); subscriptions open the socket too, this is for a manager that
        has none yet.
        """
        if self._keepalive is None:
            channel = SocketChannel(
                f"{CONNECTION_TOPIC}:{uuid.uuid4()}",
                postgres_changes=[],
                on_change=lambda data: None,
                on_error=self._socket_error,
            )
            self._keepalive = channel
            try:
                await self.socket.join(channel)
            except BaseException:
                self._keepalive = None
                raise

    async def unsubscribe(self, channel_name: str) -> bool:
        """Leave ``channel_name`` (``"customer:<id>:messages"``…); False if not subscribed."""
        subscription = self.subscriptions.pop(channel_name.removeprefix("realtime:"), None)
        if subscription is None:
            return False
        if subscription.channel is not None:
            await self.socket.leave(subscription.channel)
        await subscription._close()
        return True

    async def unsubscribe_all(self) -> None:
        for name in list(self.subscriptions):
            await self.unsubscribe(name)

    async def set_auth(self, token: str | None) -> None:
        """Use a new access token for REST calls, every joined channel and later (re)joins."""
        self.access_token = token
        await self.socket.set_auth(token)

    async def close(self) -> None:
        """Leave everything and close the socket; the manager cannot be used afterwards."""
        self._closed = True
        await self.unsubscribe_all()
        await self.socket.close()
        if self._ack_task is not None and not self._ack_task.done():
            self._ack_task.cancel()
        await self._flush_acks()  # one last try
        if self._ack_batches:
            await asyncio.gather(*self._ack_batches, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _socket_error(self, error: RealtimeError) -> None:
        if self.on_error is None or isinstance(error, ConnectionLostError) and self.subscriptions:
            return  # connection losses already reach every subscription's on_error
        try:
            result = self.on_error(error)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._ack_batches.add(task)  # keep a reference until done
                task.add_done_callback(self._ack_batches.discard)
        except Exception:
            log.exception("on_error handler failed")

    # -- automatic delivery acknowledgements ----------------------------------------------

    def _me(self) -> tuple[str, str | None] | None:
        """Which side this manager's token speaks for, and its id when the token says it
        (a portal token is opaque: a customer sees only their own rows anyway)."""
        token = self.access_token
        if not token:
            return None
        # Read once per token, not per change: decoding the JWT for each typing change was a
        # third of the SDK benchmark's client CPU, in bursts that delayed typing (issue 16).
        cached = self._me_of
        if cached is not None and cached[0] == token:
            return cached[1]
        me = self._read_me(token)
        self._me_of = (token, me)
        return me

    @staticmethod
    def _read_me(token: str) -> tuple[str, str | None] | None:
        if token.startswith("pt_"):
            return "customer", None
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        if claims.get("customer_id"):
            return "customer", str(claims["customer_id"])
        if claims.get("role") == "authenticated" and claims.get("sub"):
            return "staff", str(claims["sub"])
        return None

    def _own_typing(self, event: TypingIndicatorEvent) -> bool:
        """Whether ``event`` is this user's own typing and is not wanted.

        A customer sees only their own conversations, each of which has one customer: any
        customer's typing there is theirs, even behind an opaque portal token."""
        if self.include_own_typing:
            return False
        me = self._me()
        if me is None:
            return False
        kind, who = me
        if kind == "customer":
            return event.customer_id is not None and who in (None, event.customer_id)
        return event.user_id is not None and event.user_id == who

    def _observe(self, event: Event) -> None:
        """Acknowledge what reached this client: the delivery rows addressed to this user.

        Acknowledging by row, not by message, sends nothing for messages the server does not
        track for this user (a staff user who sees a conversation assigned to someone else).
        """
        if not self.auto_ack_delivery or not isinstance(event, DeliveryStatusEvent):
            return
        if event.status != "sent" or event.change == "DELETE":
            return
        me = self._me()
        if me is None or event.recipient_type != me[0]:
            return
        if me[1] is not None and event.recipient_id != me[1]:
            return
        if event.message_id in self._acked:
            return
        self._acked[event.message_id] = None
        while len(self._acked) > ACKED_MEMORY:
            self._acked.pop(next(iter(self._acked)))
        self._to_ack.append(event.message_id)
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.create_task(self._ack_soon())

    async def _ack_soon(self) -> None:
        await asyncio.sleep(0.05)  # gather a burst into one request
        delay = 0.5
        while not await self._flush_acks() and not self._closed:
            # The server was unreachable: the acknowledgements wait, they are not dropped.
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _flush_acks(self) -> bool:
        """Send what is queued; False when the server could not be reached (kept queued)."""
        while self._to_ack:
            batch, self._to_ack = self._to_ack[:500], self._to_ack[500:]
            try:
                await self._api("POST", "/api/messages/delivered", {"messageIds": batch})
            except ApiError as exc:
                if exc.status >= 500:
                    self._to_ack[:0] = batch
                    return False
                self._socket_error(exc)  # refused (a deleted message): retrying cannot help
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._to_ack[:0] = batch
                self._socket_error(RealtimeError(f"delivery acknowledgement failed: {exc!r}"))
                return False
        return True

    # -- REST ----------------------------------------------------------------------------

    async def _api(self, method: str, path: str, body: Any = None) -> Any:
        if self._closed and not path.endswith("/delivered"):  # acks still flush at close
            raise RealtimeError("this manager is closed")
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        headers = {"apikey": self.key}
        if self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        for delay in _RECONNECT_DELAYS:
            session = self._http
            assert session is not None
            try:
                return await self._call(session, method, path, body, headers)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                # A kept-alive connection whose server went away (a restarted or killed process
                # behind the same address), or a new one taken by a listener that was closing:
                # again, on new connections (the others kept to that process are dead too),
                # after a short pause. Every call is idempotent (sends carry a
                # clientMessageId), so a request that did arrive is answered the same way again.
                if self._http is session:  # not replaced already by a call that failed alike
                    self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
                    await session.close()
                await asyncio.sleep(delay)
        assert self._http is not None
        return await self._call(self._http, method, path, body, headers)

    async def _call(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        body: Any,
        headers: dict[str, str],
        **raw: Any,
    ) -> Any:
        # ``raw``: a request body other than JSON (``data``) and its ``timeout`` (uploads).
        async with session.request(
            method, self.url + path, json=body, headers=headers, **raw
        ) as response:
            try:
                envelope = await response.json(content_type=None)
            except ValueError:
                envelope = None
            if response.status >= 400 or not isinstance(envelope, dict):
                error = envelope.get("error") if isinstance(envelope, dict) else None
                error = error if isinstance(error, dict) else {}
                raise ApiError(
                    response.status,
                    str(error.get("code", "http_error")),
                    str(error.get("message", response.reason)),
                    _seconds(response.headers.get("Retry-After")),
                )
            return envelope.get("data")

    async def send_message(
        self,
        conversation_id: object,
        content: str,
        *,
        attachments: list[Any] | None = None,
        attachment_ids: Iterable[object] | None = None,
        client_message_id: str | None = None,
    ) -> Any:
        """Send a message as the token's owner; returns the created message (camelCase).

        Without a ``client_message_id`` one is drawn here, so that a send retried after a
        dropped connection is stored once."""
        body: dict[str, Any] = {
            "content": content,
            "clientMessageId": client_message_id or str(uuid.uuid4()),
        }
        if attachments is not None:
            body["attachments"] = attachments
        if attachment_ids is not None:
            body["attachmentIds"] = [str(i) for i in attachment_ids]
        return await self._api("POST", f"/api/conversations/{conversation_id}/messages", body)

    async def upload_attachment(
        self,
        conversation_id: object,
        data: bytes | str | os.PathLike[str] | AsyncIterable[bytes],
        *,
        filename: str,
        content_type: str = "application/octet-stream",
        timeout: float = 600.0,
    ) -> Any:
        """Upload a file to a conversation (docs/files.md); returns its details (camelCase),
        whose ``id`` goes in ``send_message(..., attachment_ids=[...])``.

        ``data``: the bytes, a path (streamed from disk), or an async iterable of chunks
        (streamed): never read whole into memory here. Not retried: a stream is read once."""
        if self._closed:
            raise RealtimeError("this manager is closed")
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        headers = {"apikey": self.key, "Content-Type": content_type}
        if self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        path = f"/api/conversations/{conversation_id}/attachments?filename={quote(filename)}"
        limit = aiohttp.ClientTimeout(total=timeout)
        if isinstance(data, str | os.PathLike):
            with open(data, "rb") as handle:  # aiohttp reads it in a thread, chunk by chunk
                return await self._call(
                    self._http, "POST", path, None, headers, data=handle, timeout=limit
                )
        return await self._call(self._http, "POST", path, None, headers, data=data, timeout=limit)

    async def get_attachment(self, attachment_id: object) -> Any:
        """A file's details and ``url``, a signed download link valid for a few minutes
        (``expiresAt``); participants only."""
        return await self._api("GET", f"/api/attachments/{attachment_id}")

    async def edit_message(self, message_id: object, content: str) -> Any:
        """Replace the content of one's own message, within the server's edit window; returns
        the message (camelCase, ``editedAt`` set). Subscribers get it as an ``UPDATE``."""
        return await self._api("PATCH", f"/api/messages/{message_id}", {"content": content})

    async def delete_message(self, message_id: object) -> Any:
        """Delete a message, leaving a tombstone (``deletedAt`` set, content emptied) in its
        place; deleting it again returns the same tombstone."""
        return await self._api("DELETE", f"/api/messages/{message_id}")

    async def send_typing_indicator(
        self,
        conversation_id: object,
        user_id: object = None,
        customer_id: object = None,
        is_typing: bool = True,
    ) -> None:
        """Start (expires after 5 s) or stop typing; the token says who types.

        Over the socket when a joined subscription covers the conversation: the indicator is
        then tied to this connection and ends if it drops (docs/presence.md). Otherwise over
        HTTP. Refusals (rate limit, not your conversation) raise :class:`ApiError` either way.
        """
        channel = self._channel_for(conversation_id)
        if channel is None:
            await self._api(
                "POST", f"/api/conversations/{conversation_id}/typing", {"isTyping": is_typing}
            )
            return
        payload = {"isTyping": is_typing, "conversationId": str(conversation_id)}
        reply = await self.socket.push(
            channel, "broadcast", {"type": "broadcast", "event": "typing", "payload": payload}
        )
        body = reply.payload if isinstance(reply.payload, dict) else {}
        if body.get("status") != "ok":
            response = body.get("response")
            reason = str(response.get("reason") if isinstance(response, dict) else response)
            status = 429 if "limit" in reason else 422
            raise ApiError(status, "rate_limited" if status == 429 else "refused", reason)

    def _channel_for(self, conversation_id: object) -> SocketChannel | None:
        """A joined channel on which the server accepts typing for this conversation."""
        own = None
        for name, subscription in self.subscriptions.items():
            channel = subscription.channel
            if channel is None or channel.state is not ChannelState.JOINED:
                continue
            if name == f"conversation:{conversation_id}":
                return channel
            if name.endswith(":messages") and own is None:
                own = channel
        return own

    async def get_messages(
        self, conversation_id: object, *, limit: int = 50, before: str | None = None
    ) -> tuple[list[MessageEvent], str | None]:
        """A page of history, newest first, and the cursor of the next (older) page."""
        query = f"?limit={int(limit)}" + (f"&before={before}" if before else "")
        data = await self._api("GET", f"/api/conversations/{conversation_id}/messages{query}")
        messages = [
            MessageEvent(
                id=str(m["id"]),
                conversation_id=str(m["conversationId"]),
                content=str(m["content"]),
                sender_type=m["senderType"],
                sender_id=str(m["senderId"]),
                created_at=str(m["createdAt"]),
                attachments=tuple(m.get("attachments") or ()),
                client_message_id=m.get("clientMessageId"),
                edited_at=m.get("editedAt"),
                deleted_at=m.get("deletedAt"),
            )
            for m in data.get("messages", [])
        ]
        return messages, data.get("nextCursor")

    async def search(
        self,
        q: str,
        *,
        conversation_id: object = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> tuple[list[SearchResult], str | None]:
        """Messages the caller may see that match ``q`` (web-search syntax), best first, and
        the cursor of the next page."""
        query = query_string(q=q, conversationId=conversation_id, limit=int(limit), cursor=cursor)
        data = await self._api("GET", f"/api/search{query}")
        return [SearchResult.from_api(r) for r in data["results"]], data.get("nextCursor")

    async def list_conversations(
        self,
        *,
        status: str | None = None,
        assignee: object = None,
        unread: bool | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of conversations, latest activity first, filtered by status, assignee (a
        staff user id, ``"mine"`` or ``"unassigned"``) and unread; and the next page's cursor."""
        query = query_string(
            status=status, assignee=assignee, unread=unread, limit=int(limit), before=before
        )
        data = await self._api("GET", f"/api/conversations{query}")
        return list(data["conversations"]), data.get("nextCursor")

    async def get_conversation_counts(self, status: str = "open") -> dict[str, Any]:
        """How many conversations each inbox filter holds (all, mine, unassigned, unread) in
        ``status``, and per status. Recompute it on the change events the inbox receives."""
        data: dict[str, Any] = await self._api(
            "GET", f"/api/conversations/counts{query_string(status=status)}"
        )
        return data

    async def mark_message_as_read(
        self, message_id: object, user_id: object = None, customer_id: object = None
    ) -> Any:
        return await self._api("POST", f"/api/messages/{message_id}/read")

    async def mark_messages_as_read(self, message_ids: Iterable[object]) -> Any:
        """Mark up to 500 messages read in one request (all or nothing)."""
        return await self._api(
            "POST", "/api/messages/read", {"messageIds": [str(m) for m in message_ids]}
        )

    async def update_presence(
        self,
        user_id: object,
        customer_id: object,
        status: str,
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        body: dict[str, Any] = {"status": status}
        if metadata is not None:
            body["metadata"] = metadata
        return await self._api("PUT", "/api/presence", body)

    async def get_unread_count(self, user_id: object = None, customer_id: object = None) -> int:
        data = await self._api("GET", "/api/unread")
        return int(data["total"]) if isinstance(data, dict) else 0

    async def get_presence(self, conversation_id: object) -> list[PresenceEvent]:
        """Presence of the conversation's customer and of the staff assigned to or writing in it."""
        data = await self._api("GET", f"/api/conversations/{conversation_id}/presence")
        participants = data.get("participants", []) if isinstance(data, dict) else []
        return [
            PresenceEvent(
                id=str(p["id"]),
                status=p["status"],
                last_seen_at=str(p["lastSeenAt"]),
                user_id=p.get("userId"),
                customer_id=p.get("customerId"),
                metadata=dict(p.get("metadata") or {}),
            )
            for p in participants
            if isinstance(p, dict)
        ]

    async def is_online(
        self, conversation_id: object, *, user_id: object = None, customer_id: object = None
    ) -> bool:
        """Whether that participant of the conversation is ``online`` now."""
        for presence in await self.get_presence(conversation_id):
            if (user_id is not None and presence.user_id == str(user_id)) or (
                customer_id is not None and presence.customer_id == str(customer_id)
            ):
                return presence.status == "online"
        return False


def _seconds(header: str | None) -> float | None:
    """A ``Retry-After`` in seconds (this server never sends the HTTP-date form)."""
    try:
        return float(header) if header is not None else None
    except ValueError:
        return None


_shared: RealtimeMessagingManager | None = None


def get_realtime_manager() -> RealtimeMessagingManager:
    """One shared manager configured from ``RTM_URL``, ``RTM_ANON_KEY`` and ``RTM_ACCESS_TOKEN``."""
    global _shared
    if _shared is None:
        url, key = os.environ.get("RTM_URL"), os.environ.get("RTM_ANON_KEY")
        if not url or not key:
            raise RuntimeError("set RTM_URL and RTM_ANON_KEY to use get_realtime_manager()")
        _shared = RealtimeMessagingManager(
            url, key, access_token=os.environ.get("RTM_ACCESS_TOKEN") or None
        )
    return _shared
