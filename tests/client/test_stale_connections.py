"""The SDK's HTTP calls survive a kept-alive connection whose server went away.

Behind one address, a process that is killed or restarted leaves the SDK's pooled connection to
it dead; the next request on it fails with a reset. Reproduced here deterministically with a TCP
relay in front of the real server that cuts the next request's connection without forwarding it
(seen for real with ``rtm serve --workers 2`` and a SIGKILLed worker).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

from realtime_messaging import RealtimeMessagingManager
from tests.conftest import RunningServer, Seed


class Relay:
    """Forwards TCP to ``target``; after ``doom()`` the connections open at that moment drop
    the next request they carry (a process gone behind a connection the client still pools);
    new connections work, except the next ``to_reset`` (taken by a dying process's listener)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.connections = 0
        self.to_reset = 0  # new connections to reset on arrival (a listener being closed)
        self.open: set[asyncio.StreamWriter] = set()
        self.doomed: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    def doom(self) -> None:
        self.doomed = set(self.open)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.to_reset:
            self.to_reset -= 1
            client_w.transport.abort()
            return
        self.open.add(client_w)
        server_r, server_w = await asyncio.open_connection(*self.target)
        await asyncio.gather(
            self._forward(client_r, server_w, client_w), self._back(server_r, client_w)
        )

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
    ) -> None:
        """Client to server; a request to cut resets the client's connection, unanswered."""
        try:
            while data := await reader.read(65536):
                if client in self.doomed:
                    client.transport.abort()
                    return
                upstream.write(data)
                await upstream.drain()
        except ConnectionError:
            pass
        finally:
            upstream.close()

    @staticmethod
    async def _back(reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                client.write(data)
                await client.drain()
        except ConnectionError:
            pass
        finally:
            client.close()


@contextlib.asynccontextmanager
async def relay_to(server: RunningServer) -> AsyncIterator[tuple[Relay, str]]:
    host, port = server.http_url.removeprefix("http://").split(":")
    relay = Relay(host, int(port))
    relay.server = await asyncio.start_server(relay._serve, "127.0.0.1", 0)
    bound = relay.server.sockets[0].getsockname()[1]
    try:
        yield relay, f"http://127.0.0.1:{bound}"
    finally:
        relay.server.close()


async def test_a_send_on_dead_kept_alive_connections_is_retried_and_stored_once(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer_id, portal = await seed.customer()
    conversation = await seed.conversation(customer_id)
    async with (
        relay_to(server) as (relay, url),
        RealtimeMessagingManager(url, server.anon_key, access_token=portal) as customer,
    ):
        # Two sends at once: the client keeps two connections alive for later calls.
        await asyncio.gather(*(customer.send_message(conversation, f"first {n}") for n in (1, 2)))
        assert relay.connections == 2
        relay.doom()
        sent = await customer.send_message(conversation, "second")
        assert sent["content"] == "second"
        assert relay.connections == 3  # the retry came on a new connection
        rows = await pool.fetch(
            "SELECT content FROM customer_messages WHERE conversation_id = $1",
            conversation,
        )
        assert sorted(r["content"] for r in rows) == ["first 1", "first 2", "second"]


async def test_a_send_retries_while_new_connections_are_reset_for_a_moment(
    server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    """A SIGKILLed worker's listener takes new connections until the kernel has closed it, and
    resets them: the retry on a new connection can fail too (seen in CI with --workers 2)."""
    customer_id, portal = await seed.customer()
    conversation = await seed.conversation(customer_id)
    async with (
        relay_to(server) as (relay, url),
        RealtimeMessagingManager(url, server.anon_key, access_token=portal) as customer,
    ):
        await customer.send_message(conversation, "first")
        relay.doom()
        relay.to_reset = 2
        sent = await customer.send_message(conversation, "second")
        assert sent["content"] == "second"
        assert relay.connections == 4  # the kept one, two reset, the one that answered
        rows = await pool.fetch(
            "SELECT content FROM customer_messages WHERE conversation_id = $1 ORDER BY created_at",
            conversation,
        )
        assert [r["content"] for r in rows] == ["first", "second"]
