"""A private channel's broadcasts and presence diffs reach only the topic's private channels, a
public one's only its public ones, and presence diffs only channels that may read presence (as on
Supabase); the server's own events (``private`` None) reach every member."""

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
    reads_presence: bool = True
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
    hub.deliver(Envelope("realtime:room", "system", {"everyone": 1}))
    turn.flush()
    assert len(private.transport.frames) == len(public.transport.frames) == 2


async def test_presence_diffs_reach_their_kind_and_only_channels_that_read_presence() -> None:
    hub, turn = Hub(), Turn()
    private, public = Member("p", True, turn), Member("q", False, turn)
    blind = Member("b", True, turn, reads_presence=False)  # broadcast read only
    for member in (private, public, blind):
        hub.add("realtime:room", member)
    diff = {"joins": {"k": {"metas": []}}, "leaves": {}}
    for envelope in (
        Envelope("realtime:room", "presence_diff", diff, private=True),
        Envelope("realtime:room", "presence_diff", diff, private=False),
        Envelope("realtime:room", "broadcast", {"secret": 1}, private=True),
    ):
        hub.deliver(envelope)
        turn.flush()  # one write per turn and socket: a frame per write here
    assert [b"presence_diff" in f for f in private.transport.frames] == [True, False]
    assert [b"presence_diff" in f for f in public.transport.frames] == [True]
    assert [b"secret" in f for f in blind.transport.frames] == [True]
