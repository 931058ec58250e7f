"""A raw Phoenix socket for tests: exact frames in, exact frames out, bounded waits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from realtime_messaging.protocol.frames import Vsn

TIMEOUT = 5.0


class RawSocket:
    """Sends and receives Phoenix messages as plain dicts ``{join_ref, ref, topic, event, payload}``."""

    def __init__(
        self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, vsn: Vsn
    ):
        self.session = session
        self.ws = ws
        self.vsn = vsn
        self._ref = 0
        self.binary: list[bytes] = []

    @classmethod
    async def connect(cls, ws_url: str, apikey: str | None, vsn: Vsn = Vsn.V1) -> RawSocket:
        session = aiohttp.ClientSession()
        params = {"vsn": vsn.value}
        if apikey is not None:
            params["apikey"] = apikey
        try:
            ws = await session.ws_connect(ws_url, params=params, autoping=True)
        except BaseException:
            await session.close()
            raise
        return cls(session, ws, vsn)

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()

    def next_ref(self) -> str:
        self._ref += 1
        return str(self._ref)

    async def send(
        self,
        topic: str,
        event: str,
        payload: Any,
        ref: str | None = None,
        join_ref: str | None = None,
    ) -> str | None:
        if self.vsn is Vsn.V2:
            await self.ws.send_str(orjson.dumps([join_ref, ref, topic, event, payload]).decode())
        else:
            frame = {
                "topic": topic,
                "event": event,
                "payload": payload,
                "ref": ref,
                "join_ref": join_ref,
            }
            await self.ws.send_str(orjson.dumps(frame).decode())
        return ref

    async def send_raw(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data)

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next text message as a dict; binary frames are kept in ``self.binary``."""
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type is aiohttp.WSMsgType.TEXT:
                raw = orjson.loads(msg.data)
                if self.vsn is Vsn.V2:
                    join_ref, ref, topic, event, payload = raw
                    return {
                        "join_ref": join_ref,
                        "ref": ref,
                        "topic": topic,
                        "event": event,
                        "payload": payload,
                    }
                return dict(raw)
            if msg.type is aiohttp.WSMsgType.BINARY:
                self.binary.append(msg.data)
                return {"binary": msg.data}
            raise ConnectionError(f"socket closed: {msg.type} {self.ws.close_code} {msg.extra}")

    async def expect(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        """Wait for the first message matching ``predicate`` (others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.recv(timeout)
                if predicate(msg):
                    return msg

    async def reply_to(self, ref: str | None, timeout: float = TIMEOUT) -> dict[str, Any]:
        return await self.expect(
            lambda m: m.get("event") == "phx_reply" and m.get("ref") == ref, timeout
        )

    async def join(
        self, topic: str, config: dict[str, Any] | None = None, access_token: str | None = None
    ) -> dict[str, Any]:
        ref = self.next_ref()
        payload: dict[str, Any] = {"config": config or {}}
        if access_token is not None:
            payload["access_token"] = access_token
        await self.send(f"realtime:{topic}", "phx_join", payload, ref, ref)
        reply = await self.reply_to(ref)
        return reply["payload"]

    async def closed(self, timeout: float = TIMEOUT) -> int | None:
        """Wait until the server closes the socket; return the close code."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.CLOSING,
                ):
                    return self.ws.close_code
                if msg.type is aiohttp.WSMsgType.ERROR:
                    return self.ws.close_code
