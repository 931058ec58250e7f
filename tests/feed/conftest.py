"""Helpers for change-feed tests: subscribe over a raw socket, write with plain SQL."""

from __future__ import annotations

from typing import Any

from realtime_messaging.protocol.frames import Vsn
from tests.server.wsclient import RawSocket


async def subscribe(
    ws_url: str,
    token: str,
    topic: str,
    bindings: list[dict[str, Any]],
    *,
    vsn: Vsn = Vsn.V1,
    resume: int | None = None,
) -> tuple[RawSocket, dict[str, Any]]:
    """Join with postgres_changes bindings and wait for "Subscribed to PostgreSQL"."""
    sock = await RawSocket.connect(ws_url, token, vsn)
    config: dict[str, Any] = {"postgres_changes": bindings}
    if resume is not None:
        config["resume"] = {"position": resume}
    reply = await sock.join(topic, config)
    assert reply["status"] == "ok", reply
    system = await sock.expect(lambda m: m.get("event") == "system")
    assert system["payload"]["message"] == "Subscribed to PostgreSQL", system
    return sock, reply


def is_change(table: str | None = None, op: str | None = None):  # type: ignore[no-untyped-def]
    def check(m: dict[str, Any]) -> bool:
        if m.get("event") != "postgres_changes":
            return False
        data = m["payload"]["data"]
        return (table is None or data["table"] == table) and (op is None or data["type"] == op)

    return check
