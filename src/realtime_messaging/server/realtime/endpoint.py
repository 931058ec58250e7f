"""The WebSocket endpoint of one process: upgrades sockets, runs their sessions, stops them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiohttp import web

from ...domain.identity import Identity
from ...protocol.errors import ProtocolError
from ...protocol.frames import Vsn
from ...store.changefeed import Change
from ..auth import AuthError
from . import presence, tokens
from .dispatch import on_frame
from .frontdoor import Refusal, Upgrade
from .session import Session, who
from .shared import Shared
from .wire import CLOSE_HANDSHAKE_TIMEOUT, AiohttpWire, PicowsWire, Wire

log = logging.getLogger(__package__)

#: "Service restart": the close code of a stopping server (clients reconnect).
CLOSE_SERVICE_RESTART = 1012
#: Sockets closed at once when the server stops (as Centrifuge does), the pause between two
#: batches (10,000 sockets: 4 s), and the bound on the close handshakes once all are sent.
DRAIN_BATCH = 128
DRAIN_INTERVAL = 0.05
DRAIN_TIMEOUT = 5.0


class RealtimeServer(Shared[Session]):
    """The WebSocket endpoint of one process: what its sessions share, their upgrade, the
    sweepers that close them, and the drain when the server stops."""

    #: The token and idle sweepers, while the server runs.
    _sweepers: tuple[asyncio.Task[None], ...] = ()

    async def start(self) -> None:
        await self.cluster.start()
        self._sweepers = (
            asyncio.create_task(tokens.sweep(self), name="rtm-token-sweeper"),
            asyncio.create_task(self._sweep_idle(), name="rtm-idle-sweeper"),
        )

    async def stop(self) -> None:
        """Close every socket with 1012 ("service restart"), :data:`DRAIN_BATCH` at a time.

        1012, never 1000, after which phoenix.js does not reconnect: clients come back to
        another process (or this one restarted) and resume. A batch starts every
        :data:`DRAIN_INTERVAL` without waiting for the previous one's close handshakes, so
        that thousands of clients (realtime-js retries after a fixed second) do not all come
        back in the same instant; the handshakes are bounded together by
        :data:`DRAIN_TIMEOUT`, then cut.
        """
        for task in self._sweepers:
            task.cancel()
        await asyncio.gather(*self._sweepers, return_exceptions=True)
        self._sweepers = ()
        sessions = list(self.sessions)
        closing: list[asyncio.Task[None]] = []
        for start in range(0, len(sessions), DRAIN_BATCH):
            if start:
                await asyncio.sleep(DRAIN_INTERVAL)
            closing += [
                asyncio.create_task(session.drain(CLOSE_SERVICE_RESTART, "service restart"))
                for session in sessions[start : start + DRAIN_BATCH]
            ]
        if closing:
            _, late = await asyncio.wait(closing, timeout=DRAIN_TIMEOUT)
            for task in late:
                task.cancel()  # the wire then cuts the connection
            await asyncio.gather(*closing, return_exceptions=True)
        await self.cluster.stop()

    async def _sweep_idle(self) -> None:
        """Close sockets silent for longer than the idle timeout (clients heartbeat every 25 s).

        One sweep for all sockets, instead of a timeout armed around every frame received.
        """
        idle = self.settings.idle_timeout
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(idle / 2, 5.0))
            deadline = loop.time() - idle
            for session in list(self.sessions):
                if session.last_seen < deadline:
                    # 1001, not 1000: phoenix.js does not reconnect after 1000, and a client
                    # that was only stalled should come back.
                    session.close_soon(1001, "idle timeout")

    def presence_changed(self, changes: Sequence[Change]) -> None:
        """Keep the ``status`` in the Phoenix presence metas equal to the presence rows."""
        presence.presence_changed(self, changes)

    async def admit(self, upgrade: Upgrade) -> PicowsWire[Session]:
        """An upgrade the front door read: authenticated, the wire that will serve it."""
        token = upgrade.headers.get("x-api-key") or upgrade.query.get("apikey")
        vsn, identity = await self._admit(token, upgrade.query.get("vsn"))
        return PicowsWire(
            lambda wire: self._open(wire, vsn, identity),
            self._ended,
            self.settings.max_frame_bytes,
            self.loop,
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /realtime/v1/websocket`` on a connection aiohttp already serves (an upgrade
        on a kept-alive connection): authenticate, upgrade, run the session."""
        token = request.headers.get("x-api-key") or request.query.get("apikey")
        try:
            vsn, identity = await self._admit(token, request.query.get("vsn"))
        except Refusal as refusal:
            return web.json_response({"error": refusal.message}, status=refusal.status)
        ws = web.WebSocketResponse(
            max_msg_size=self.settings.max_frame_bytes,
            compress=False,
            autoping=True,
            timeout=CLOSE_HANDSHAKE_TIMEOUT,
        )
        await ws.prepare(request)
        assert request.transport is not None
        wire = AiohttpWire(ws, request.transport)
        session = self._open(wire, vsn, identity)
        try:
            await wire.read(session, f"rtm-socket-{session.id}")
        finally:
            self._ended(session, ws.close_code)
        return ws

    async def _admit(self, token: str | None, vsn_text: str | None) -> tuple[Vsn, Identity]:
        try:
            vsn = Vsn.parse(vsn_text)
        except ProtocolError as exc:
            raise Refusal(400, str(exc)) from None
        try:
            identity = await self.auth.identify(token)
        except AuthError as exc:
            log.info("socket refused (%d): %s", exc.status, exc.message)
            raise Refusal(exc.status, exc.message) from None
        return vsn, identity

    def _open(self, wire: Wire, vsn: Vsn, identity: Identity) -> Session:
        session = Session(self, wire, vsn, identity, on_frame)
        self.sessions.add(session)
        # Debug: at info, a reconnect storm's log lines were a sixth of a connect's CPU; the
        # socket's close writes its info lines (the access line and why it closed). Its
        # arguments are made only when it is logged.
        if log.isEnabledFor(logging.DEBUG):
            log.debug("socket %s connected: %s, vsn %s", session.id, who(identity), vsn.value)
        return session

    def _ended(self, session: Session, client_code: int | None) -> None:
        self.sessions.discard(session)
        session.teardown()
        log.info(
            "socket %s disconnected: %s",
            session.id,
            session.close_reason or f"closed by the client ({client_code})",
        )
