"""Writers wake the stamper only while it sleeps (migration 0007, store/changefeed.py)."""

from __future__ import annotations

import asyncio

import asyncpg

from tests.conftest import Seed, fresh_database, running_server

from .conftest import is_change, subscribe
from .test_resume import INSERT, _messages


async def test_writers_notify_only_while_the_stamper_sleeps(admin_url: str) -> None:
    async with fresh_database(admin_url) as url:
        listener = await asyncpg.connect(url)
        writer = await asyncpg.connect(url)
        try:
            heard: asyncio.Queue[str] = asyncio.Queue()
            await listener.add_listener("rtm_change", lambda *args: heard.put_nowait(args[3]))
            customer = await writer.fetchval(
                "INSERT INTO customers (name) VALUES ('c') RETURNING id"
            )
            await writer.execute("INSERT INTO conversations (customer_id) VALUES ($1)", customer)
            # Asleep (the default): the writer wakes it.
            assert await asyncio.wait_for(heard.get(), 5) == ""
            await writer.execute("UPDATE rtm.change_feed_state SET stamper_awake = true")
            await writer.execute("INSERT INTO conversations (customer_id) VALUES ($1)", customer)
            # Awake: silence. A notification sent after it proves the channel still works and
            # that none was queued before it.
            await writer.execute("SELECT pg_notify('rtm_change', 'marker')")
            assert await asyncio.wait_for(heard.get(), 5) == "marker"
        finally:
            await listener.close()
            await writer.close()


async def test_a_stale_awake_flag_left_by_a_dead_stamper_does_not_silence_writers(
    admin_url: str,
) -> None:
    """A stamper killed while awake leaves the flag set; the next one must clear it, or every
    change would wait for the poll. The poll is set to a minute so that only a wake-up can
    deliver in time."""
    async with fresh_database(admin_url) as url, asyncpg.create_pool(url) as pool:
        seed = Seed(pool)
        customer, _ = await seed.customer()
        conv = await seed.conversation(customer)
        await pool.execute("UPDATE rtm.change_feed_state SET stamper_awake = true")
        async with running_server(url, feed_poll_interval=60.0) as srv:
            sock, _ = await subscribe(srv.ws_url, srv.service_key, "wake", _messages(conv))
            try:
                async with asyncio.timeout(5):
                    while await pool.fetchval("SELECT stamper_awake FROM rtm.change_feed_state"):
                        await asyncio.sleep(0.01)
                await pool.execute(INSERT, conv, customer, "after a quiet moment")
                got = await sock.expect(is_change("customer_messages"), timeout=2)
                assert got["payload"]["data"]["record"]["content"] == "after a quiet moment"
                # And in a burst, while it is awake and the writers are silent.
                for i in range(20):
                    await pool.execute(INSERT, conv, customer, f"burst-{i}")
                contents = [
                    (await sock.expect(is_change("customer_messages"), timeout=2))["payload"][
                        "data"
                    ]["record"]["content"]
                    for _ in range(20)
                ]
                assert contents == [f"burst-{i}" for i in range(20)]
            finally:
                await sock.close()
