"""Running a coroutine at once up to its first wait (server/eager.py): what never waits is done
on the spot, what waits goes on in a task with its value, cancellation and failure intact."""

from __future__ import annotations

import asyncio

import pytest

from realtime_messaging.server.eager import step


async def test_a_coroutine_that_never_waits_is_done_on_the_spot() -> None:
    done: list[str] = []

    async def answer() -> str:
        return "x"

    async def work() -> None:
        done.append(await answer())  # an await that does not suspend

    assert step(work()) is None
    assert done == ["x"]


async def test_a_coroutine_that_waits_goes_on_with_what_it_waited_for() -> None:
    future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def work() -> None:
        seen.append("before")
        seen.append(await future)

    started = step(work())
    assert started is not None and seen == ["before"]

    async def finish() -> None:
        await started

    task = asyncio.create_task(finish())
    future.set_result("value")
    await task
    assert seen == ["before", "value"]


async def test_cancelling_the_task_reaches_the_coroutine() -> None:
    events: list[str] = []

    async def work() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    started = step(work())
    assert started is not None

    async def finish() -> None:
        await started

    task = asyncio.create_task(finish())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events == ["cancelled"]


async def test_closing_abandons_the_coroutine_where_it_waits() -> None:
    events: list[str] = []

    async def work() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            events.append("finally")

    started = step(work())
    assert started is not None
    started.close()
    assert events == ["finally"]


async def test_failures_come_out_where_they_happen() -> None:
    async def fails_at_once() -> None:
        raise ValueError("now")

    with pytest.raises(ValueError, match="now"):
        step(fails_at_once())

    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def fails_later() -> None:
        await future
        raise ValueError("later")

    started = step(fails_later())
    assert started is not None
    future.set_result(None)
    with pytest.raises(ValueError, match="later"):
        await started
