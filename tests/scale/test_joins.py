"""The joins a Redis broker keeps waiting for their subscription's confirmation
(``broker/joins.py``): a topic stays wanted while any join waits on it, a confirmation lets the
joins of its key go on, a lost connection lets them go on unconfirmed, a join gives up at its
bound."""

from __future__ import annotations

import asyncio

from realtime_messaging.broker.joins import Joins


class Wants:
    """What the broker is told: topics wanted and no longer wanted, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def want(self, topic: str) -> None:
        self.calls.append(("want", topic))

    def unwant(self, topic: str) -> None:
        self.calls.append(("unwant", topic))


async def _started(joins: Joins[bytes], topic: str, key: bytes, wants: Wants) -> asyncio.Task[bool]:
    """A join waiting on ``key`` (in a task), once it counts for ``topic`` (it has said so)."""
    told = len(wants.calls)
    task = asyncio.create_task(joins.wait(topic, key, 5.0, wants.want, wants.unwant))
    while len(wants.calls) == told:
        await asyncio.sleep(0)
    assert topic in joins
    return task


async def test_a_topic_is_wanted_while_a_join_waits_and_confirmation_lets_them_all_go() -> None:
    joins: Joins[bytes] = Joins()
    wants = Wants()
    first = await _started(joins, "realtime:a", b"t:a", wants)
    second = await _started(joins, "realtime:a", b"t:a", wants)
    assert joins.topics() == {"realtime:a"} and joins.keys() == [b"t:a"]
    joins.confirm(b"t:a")
    assert await first and await second
    assert "realtime:a" not in joins and joins.keys() == []
    assert wants.calls == [("want", "realtime:a")] * 2 + [("unwant", "realtime:a")] * 2


async def test_a_lost_connection_releases_only_the_joins_of_its_keys() -> None:
    joins: Joins[bytes] = Joins()
    wants = Wants()
    lost = await _started(joins, "realtime:a", b"t:a", wants)
    kept = await _started(joins, "realtime:b", b"t:b", wants)
    joins.release([b"t:a"])
    assert await lost
    assert not kept.done() and joins.topics() == {"realtime:b"}
    joins.release()
    assert await kept
    assert joins.topics() == set() and joins.keys() == []


async def test_a_join_gives_up_at_its_bound_and_leaves_nothing_behind() -> None:
    joins: Joins[str] = Joins()
    wants = Wants()
    assert not await joins.wait("realtime:a", "realtime:a", 0.01, wants.want, wants.unwant)
    assert joins.topics() == set() and joins.keys() == []
    assert wants.calls == [("want", "realtime:a"), ("unwant", "realtime:a")]
