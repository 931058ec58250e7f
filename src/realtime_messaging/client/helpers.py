"""The documented best practices as helpers: debounced typing, presence from activity, batched reads.

A UI calls them synchronously and often (every keystroke, every mouse move, every message that
scrolls into view); they turn that into the few HTTP calls the server's rate limits allow. Each
helper decides what to send from its state and the event loop's clock (``loop.time()``), and one
worker task per helper sends it, in order, so a "stop typing" never overtakes the "start" before
it. Network errors go to ``on_error`` (the helper's, else the manager's); with neither, the first
one is raised by :meth:`aclose`. Close helpers before their manager.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from .errors import ApiError
from .manager import Handler, RealtimeMessagingManager

log = logging.getLogger(__name__)

PresenceStatus = Literal["online", "away", "offline"]
#: What a helper's planner returns: a request to send now, or when to look again (None: never).
_Plan = tuple[Callable[[], Awaitable[None]] | None, float | None]
_DONE: _Plan = (None, None)
MAX_READ_BATCH = 500


class RateBudget:
    """The client's side of a moving-window limit such as "10 a minute".

    Each use counts from the moment its response arrived: the server counted the request before
    answering, so a request sent ``window`` seconds after that cannot meet it in the server's
    window, however long either request was on the way.
    """

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a rate budget needs a positive limit and window")
        self.limit = limit
        self.window = window
        self._uses: deque[float] = deque()

    def used(self, now: float) -> int:
        while self._uses and self._uses[0] + self.window <= now:
            self._uses.popleft()
        return len(self._uses)

    def available(self, now: float, reserve: int = 0) -> int:
        return max(0, self.limit - reserve - self.used(now))

    def allows(self, now: float, cost: int = 1, reserve: int = 0) -> bool:
        return self.available(now, reserve) >= cost

    def free_at(self, now: float, cost: int = 1, reserve: int = 0) -> float:
        """When :meth:`allows` becomes true (infinity if ``cost + reserve`` exceeds the limit)."""
        expiring = self.used(now) + cost + reserve - self.limit
        if expiring <= 0:
            return now
        if cost + reserve > self.limit:
            return float("inf")
        return self._uses[expiring - 1] + self.window

    def record(self, at: float, cost: int = 1) -> None:
        self._uses.extend([at] * cost)


class _Helper:
    """One worker task that performs what :meth:`_plan` asks for, one request at a time."""

    def __init__(self, manager: RealtimeMessagingManager, on_error: Handler | None) -> None:
        self.manager = manager
        self.on_error = on_error
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._errors: list[Exception] = []

    def _plan(self, now: float) -> _Plan:
        raise NotImplementedError

    def _holding(self) -> bool:
        """Whether :meth:`flush` must keep waiting although nothing can be sent yet."""
        return False

    def _kick(self) -> None:
        """Something changed: make the worker look again (starting it when it is not running)."""
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run(), name=f"rtm-{type(self).__name__}")

    async def _run(self) -> None:
        try:
            while True:
                self._wake.clear()
                action, wake_at = self._plan(self._loop.time())
                if action is not None:
                    await action()
                    continue
                if not self._holding():
                    self._idle.set()
                if wake_at is None:
                    return
                try:
                    async with asyncio.timeout_at(wake_at):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        finally:
            self._idle.set()  # a worker that ended, however, leaves nobody to wait for

    async def _report(self, error: Exception) -> None:
        handler = self.on_error or self.manager.on_error
        if handler is None:
            self._errors.append(error)
            return
        try:
            result = handler(error)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("on_error handler of %s failed", type(self).__name__)

    async def flush(self) -> None:
        """Wait until nothing is due now (everything so far sent, or waiting for its time)."""
        self._kick()
        await self._idle.wait()

    async def aclose(self) -> None:
        """Send what closing requires, then raise the first error no handler took, if any."""
        self._closing = True
        self._kick()
        if self._task is not None:
            await self._task
        errors, self._errors = self._errors, []
        if errors:
            for other in errors[1:]:
                errors[0].add_note(f"also: {other!r}")
            raise errors[0]


class TypingHelper(_Helper):
    """Typing indicators from keystrokes: ``keystroke()`` on each one, :meth:`send` to send.

    The first keystroke starts the indicator; while keystrokes continue it is refreshed every
    ``refresh_every`` seconds, before the server lets it expire (``expires_after``, 5 s on the
    server); ``idle_after`` seconds without a keystroke, :meth:`stop`, or :meth:`aclose` stop it.
    Every request counts against the server's typing limit (``rate_limit`` per ``rate_window``
    per participant and conversation, 10 a minute by default), and the helper never exceeds it,
    keeping one request in reserve for the stop: someone typing without a pause for more than
    about half a minute sees the indicator lapse until the oldest request leaves the window.
    """

    def __init__(
        self,
        manager: RealtimeMessagingManager,
        conversation_id: object,
        *,
        user_id: object = None,
        customer_id: object = None,
        idle_after: float = 3.0,
        refresh_every: float = 4.0,
        expires_after: float = 5.0,
        rate_limit: int = 10,
        rate_window: float = 60.0,
        on_error: Handler | None = None,
    ) -> None:
        if idle_after <= 0 or refresh_every <= 0 or expires_after <= 0:
            raise ValueError("idle_after, refresh_every and expires_after must be positive")
        if rate_limit < 2:
            raise ValueError("rate_limit must allow a start and a stop")
        super().__init__(manager, on_error)
        self.conversation_id = conversation_id
        self.user_id = user_id
        self.customer_id = customer_id
        self.idle_after = idle_after
        self.refresh_every = refresh_every
        self.expires_after = expires_after
        self.budget = RateBudget(rate_limit, rate_window)
        self._last_key: float | None = None
        #: Until when the server may show us typing (None: it does not).
        self._live_until: float | None = None
        self._next_start_at = float("-inf")
        self._starting = False
        self._outbox: deque[tuple[str, dict[str, Any], asyncio.Future[Any]]] = deque()

    async def __aenter__(self) -> TypingHelper:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def is_typing(self) -> bool:
        """Whether the server may be showing the indicator, as far as this helper knows."""
        return self._live_until is not None and self._loop.time() < self._live_until

    def keystroke(self) -> None:
        """The user typed: cheap enough to call on every key. Ignored after :meth:`aclose`."""
        if self._closing:
            return
        now = self._loop.time()
        was_idle = self._last_key is None or now >= self._last_key + self.idle_after
        self._last_key = now
        if was_idle or self._task is None or self._task.done():
            self._kick()

    def stop(self) -> None:
        """The user stopped typing (the input lost focus, for instance): stop the indicator now."""
        self._last_key = None
        if self._live_until is not None:
            self._kick()

    def message_sent(self) -> None:
        """The user's message was sent some other way than :meth:`send`.

        The server stops the typist's indicator itself when their message arrives, so this costs
        a request only when a start was still on its way and may have landed after the message.
        """
        self._last_key = None
        if self._starting:
            self._kick()
        else:
            self._live_until = None
            self._next_start_at = float("-inf")

    async def send(self, content: str, **options: Any) -> Any:
        """Send a message (``manager.send_message``) after any typing request still pending.

        Typing stops with it (the server does that); errors are raised here, not reported.
        """
        if self._closing:
            raise RuntimeError("the typing helper is closed")
        self._last_key = None
        sent: asyncio.Future[Any] = self._loop.create_future()
        self._outbox.append((content, options, sent))
        self._kick()
        return await sent

    def _plan(self, now: float) -> _Plan:
        if self._outbox:
            return self._send_message, None
        live = self._live_until is not None and now < self._live_until
        if not live:
            self._live_until = None
        wanted = (
            not self._closing
            and self._last_key is not None
            and now < self._last_key + self.idle_after
        )
        if wanted:
            assert self._last_key is not None
            due = self._next_start_at
            if now >= due:
                if self.budget.allows(now, reserve=1):
                    return self._start, None
                due = self.budget.free_at(now, reserve=1)
            return None, min(due, self._last_key + self.idle_after)
        self._last_key = None
        if live and self.budget.allows(now):
            return self._stop, None
        self._live_until = None  # not live, or unaffordable: it expires by itself within seconds
        return _DONE

    async def _typing(self, is_typing: bool) -> None:
        await self.manager.send_typing_indicator(
            self.conversation_id, self.user_id, self.customer_id, is_typing
        )

    async def _start(self) -> None:
        sent = self._loop.time()
        self._next_start_at = sent + self.refresh_every
        self._starting = True
        try:
            await self._typing(True)
        except ApiError as exc:
            await self._report(exc)  # the server refused it: nothing changed there
        except Exception as exc:
            self._live_until = self._loop.time() + self.expires_after  # it may have landed
            await self._report(exc)
        else:
            self._live_until = self._loop.time() + self.expires_after
        finally:
            self._starting = False
            self.budget.record(self._loop.time())

    async def _stop(self) -> None:
        self._live_until = None
        self._next_start_at = float("-inf")
        try:
            await self._typing(False)
        except Exception as exc:
            await self._report(exc)  # not retried: the indicator expires by itself
        finally:
            self.budget.record(self._loop.time())

    async def _send_message(self) -> None:
        content, options, sent = self._outbox.popleft()
        if sent.done():
            return  # the caller gave up waiting
        try:
            result = await self.manager.send_message(self.conversation_id, content, **options)
        except Exception as exc:
            if not sent.done():
                sent.set_exception(exc)
            return
        self._live_until = None  # the message stopped the indicator on the server
        self._next_start_at = float("-inf")
        if not sent.done():
            sent.set_result(result)


class PresenceHelper(_Helper):
    """Presence from activity: call :meth:`activity` on input events; ``async with`` it.

    The user is reported ``online`` at once, again at most every ``report_every`` seconds while
    activity continues (keeping ``last_seen_at`` fresh), ``away`` after ``away_after`` seconds
    without activity, ``online`` on the next activity, and ``offline`` by :meth:`aclose`. The
    server allows ``rate_limit`` updates per ``rate_window`` per user (6 a minute); the helper
    stays under it and keeps one in reserve for ``offline``. Keep the manager's socket connected
    (any subscription): the server marks a participant without a connection offline after its
    grace period (``RTM_PRESENCE_GRACE``, 10 s).
    """

    def __init__(
        self,
        manager: RealtimeMessagingManager,
        *,
        user_id: object = None,
        customer_id: object = None,
        away_after: float = 300.0,
        report_every: float = 60.0,
        metadata: dict[str, Any] | None = None,
        rate_limit: int = 6,
        rate_window: float = 60.0,
        on_error: Handler | None = None,
    ) -> None:
        if away_after <= 0 or report_every <= 0:
            raise ValueError("away_after and report_every must be positive")
        if rate_limit < 2:
            raise ValueError("rate_limit must allow a report and the final offline")
        super().__init__(manager, on_error)
        self.user_id = user_id
        self.customer_id = customer_id
        self.away_after = away_after
        self.report_every = report_every
        self.metadata = metadata
        self.budget = RateBudget(rate_limit, rate_window)
        self._last_activity: float | None = None
        #: The last status the server accepted, and when it was sent.
        self._reported: PresenceStatus | None = None
        self._reported_at = float("-inf")
        self._retry_at = float("-inf")
        self._offline_sent = False

    async def __aenter__(self) -> PresenceHelper:
        self.activity()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def status(self) -> PresenceStatus | None:
        """The last status the server accepted from this helper."""
        return self._reported

    def activity(self) -> None:
        """The user did something: cheap enough for every input event. Ignored after close."""
        if self._closing:
            return
        first_since_report = self._last_activity is None or self._last_activity <= self._reported_at
        self._last_activity = self._loop.time()
        if (
            first_since_report  # a refresh may now be due before the worker's next wake-up
            or self._reported != "online"
            or self._task is None
            or self._task.done()
        ):
            self._kick()

    def _plan(self, now: float) -> _Plan:
        if self._closing:
            if self._offline_sent or self._reported in (None, "offline"):
                return _DONE
            return self._go_offline, None
        if self._last_activity is None:
            return _DONE
        away_at = self._last_activity + self.away_after
        wanted: PresenceStatus = "online" if now < away_at else "away"
        due: float | None = None
        if wanted != self._reported:
            due = max(now, self._retry_at)
        elif wanted == "online" and self._last_activity > self._reported_at:
            due = self._reported_at + self.report_every
        if due is not None and now >= due:
            if self.budget.allows(now, reserve=1):
                return (lambda: self._send(wanted)), None
            due = self.budget.free_at(now, reserve=1)
        wakes = [t for t in (due, away_at if wanted == "online" else None) if t is not None]
        return None, min(wakes, default=None)

    async def _send(self, status: PresenceStatus) -> None:
        sent = self._loop.time()
        try:
            await self.manager.update_presence(
                self.user_id, self.customer_id, status, self.metadata
            )
        except Exception as exc:
            self._retry_at = sent + self.report_every
            await self._report(exc)
        else:
            self._reported, self._reported_at = status, sent
        finally:
            self.budget.record(self._loop.time())

    async def _go_offline(self) -> None:
        self._offline_sent = True
        await self._send("offline")


class ReadTracker(_Helper):
    """Batched read receipts: :meth:`add` what the user saw, one request marks them all read.

    Ids are sent ``flush_after`` seconds after the first unsent one was added (or on
    :meth:`flush` and :meth:`aclose`), each at most once, at most ``MAX_READ_BATCH`` per request
    and never more than the reader's budget (``rate_limit`` per ``rate_window``, counting each
    message: 60 a minute by default); the rest waits for the budget. Don't add your own messages.
    """

    def __init__(
        self,
        manager: RealtimeMessagingManager,
        *,
        flush_after: float = 0.5,
        rate_limit: int = 60,
        rate_window: float = 60.0,
        on_error: Handler | None = None,
    ) -> None:
        super().__init__(manager, on_error)
        self.flush_after = flush_after
        self.budget = RateBudget(rate_limit, rate_window)
        #: Every id sent, successfully or not (the server's receipts are idempotent anyway).
        self.marked: set[str] = set()
        self._pending: dict[str, None] = {}
        self._first_added = 0.0
        self._forced = False

    async def __aenter__(self) -> ReadTracker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def add(self, *message_ids: object) -> None:
        """Messages the user has seen (ids, or anything whose ``str`` is one)."""
        if self._closing:
            return
        fresh = [
            i for i in map(str, message_ids) if i not in self.marked and i not in self._pending
        ]
        if not fresh:
            return
        if not self._pending:
            self._first_added = self._loop.time()
        self._pending.update(dict.fromkeys(fresh))
        if self._task is None or self._task.done():
            self._kick()

    async def flush(self) -> None:
        """Send every pending id now (waiting for the budget if it is spent)."""
        self._forced = True
        await super().flush()

    def _holding(self) -> bool:
        return self._forced and bool(self._pending)

    def _plan(self, now: float) -> _Plan:
        if not self._pending:
            self._forced = False
            return _DONE
        due = now if self._forced or self._closing else self._first_added + self.flush_after
        if now >= due:
            count = min(len(self._pending), MAX_READ_BATCH, self.budget.available(now))
            if count:
                batch = list(self._pending)[:count]
                return (lambda: self._mark(batch)), None
            due = self.budget.free_at(now)
        return None, due

    async def _mark(self, batch: list[str]) -> None:
        for message_id in batch:
            del self._pending[message_id]
            self.marked.add(message_id)
        self._first_added = self._loop.time()
        try:
            await self.manager.mark_messages_as_read(batch)
        except Exception as exc:
            await self._report(exc)
        finally:
            self.budget.record(self._loop.time(), len(batch))
