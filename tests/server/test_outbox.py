"""A socket's outbox: the frames of one turn of the event loop go out in one write, in order,
once the turn is over; the byte bound still closes a slow consumer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from realtime_messaging.server.fanout import Outbox, Turn


@dataclass
class Transport:
    writes: list[bytes] = field(default_factory=list)
    buffered: int = 0
    closing: bool = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.buffered += len(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered


def _outbox(transport: Transport, turn: Turn, limit: int = 1 << 20) -> tuple[Outbox, list[int]]:
    overflows: list[int] = []
    outbox = Outbox(transport, limit, lambda: overflows.append(1), turn)  # type: ignore[arg-type]
    return outbox, overflows


async def _end_of_turn() -> None:
    """Let the loop run what this turn scheduled (the flush is a ``call_soon``)."""
    await asyncio.sleep(0)


async def test_the_frames_of_one_turn_go_out_in_one_write_in_order_after_it() -> None:
    turn = Turn()
    a, b = Transport(), Transport()
    first, _ = _outbox(a, turn)
    second, _ = _outbox(b, turn)
    first.write(b"1")
    second.write(b"x")
    first.write(b"2")
    first.write(b"3")
    assert a.writes == b.writes == []  # nothing before the turn is over
    await _end_of_turn()
    assert a.writes == [b"123"] and b.writes == [b"x"]
    first.write(b"4")
    await _end_of_turn()
    assert a.writes == [b"123", b"4"]  # the next turn: a write of its own


async def test_closing_refuses_new_frames_but_sends_those_queued_before() -> None:
    turn = Turn()
    transport = Transport()
    outbox, _ = _outbox(transport, turn)
    outbox.write(b"system error")
    outbox.closed = True
    outbox.write(b"after the close")
    outbox.flush()  # as a session does right before it writes the close frame
    assert transport.writes == [b"system error"]
    await _end_of_turn()
    assert transport.writes == [b"system error"]


async def test_a_slow_consumer_overflows_once_and_gets_nothing_more() -> None:
    turn = Turn()
    transport = Transport()
    outbox, overflows = _outbox(transport, turn, limit=10)
    outbox.write(b"x" * 8)
    outbox.write(b"y" * 8)
    await _end_of_turn()
    assert transport.writes == [b"x" * 8 + b"y" * 8] and overflows == [1]
    outbox.write(b"z")
    await _end_of_turn()
    assert transport.writes == [b"x" * 8 + b"y" * 8] and overflows == [1]


async def test_a_closing_transport_gets_nothing() -> None:
    turn = Turn()
    transport = Transport(closing=True)
    outbox, overflows = _outbox(transport, turn)
    outbox.write(b"late")
    await _end_of_turn()
    assert transport.writes == [] and outbox.closed and overflows == []
