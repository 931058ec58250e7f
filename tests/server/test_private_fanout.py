"""A private channel's broadcasts reach only the topic's private channels, a public one's only
its public ones; presence and the server's own events reach every member (as on Supabase)."""

from __future__ import annotations

from dataclasses import dataclass, field

from realtime_messaging.broker import Envelope
from realtime_messaging.protocol.frames import Vsn
from realtime_messaging.server.fanout import Hub, Outbox, Turn


@dataclass
class Transport:
    """The side of a socket the hub writes to, recording the frames."""

    frames: list[bytes] = field(default_factory=list)

    def write(self, data: bytes) -> None:
        self.frames.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


@dataclass
class Member:
    key: str
    reads_private: bool
    turn: Turn
    transport: Transport = field(default_factory=Transport)
    vsn: Vsn = Vsn.V1
    receives_own_broadcasts: bool = False
    outbox: Outbox = field(init=False)

    def __post_init__(self) -> None:
        self.outbox = Outbox(self.transport, 1 << 20, lambda: None, self.turn)  # type: ignore[arg-type]


async def test_private_and_public_channels_of_one_topic_stay_apart() -> None:
    hub, turn = Hub(), Turn()
    private, public = Member("p", True, turn), Member("q", False, turn)
    hub.add("realtime:room", private)
    hub.add("realtime:room", public)
    hub.deliver(Envelope("realtime:room", "broadcast", {"secret": 1}, private=True))
    turn.flush()
    hub.deliver(Envelope("realtime:room", "broadcast", {"open": 1}, private=False))
    turn.flush()
    assert [b"secret" in f for f in private.transport.frames] == [True]
    assert [b"open" in f for f in public.transport.frames] == [True]
    hub.deliver(Envelope("realtime:room", "presence_diff", {"joins": {}, "leaves": {}}))
    turn.flush()
    assert len(private.transport.frames) == len(public.transport.frames) == 2
