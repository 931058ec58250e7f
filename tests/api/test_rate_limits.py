"""Each rate limit is reached, answered with 429 + Retry-After + the envelope, and resets."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp

from tests.conftest import Seed, running_server


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, token: str, json: object = None
) -> tuple[int, dict, aiohttp.ClientResponse]:  # type: ignore[type-arg]
    async with session.request(
        method, url, json=json, headers={"Authorization": f"Bearer {token}"}
    ) as r:
        return r.status, await r.json(), r


async def test_typing_presence_and_receipt_limits(database_url: str, seed: Seed) -> None:
    overrides = {
        "rate_typing": "3/2 second",
        "rate_presence": "2/2 second",
        "rate_read_receipts": "4/2 second",
        "rate_requests": "1000/minute",
    }
    async with running_server(database_url, **overrides) as srv, aiohttp.ClientSession() as session:
        staff, staff_token = await seed.staff()
        customer, token = await seed.customer()
        conv = await seed.conversation(customer)
        base = srv.http_url
        for _ in range(3):
            status, _, _ = await _call(
                session,
                "POST",
                f"{base}/api/conversations/{conv}/typing",
                token,
                {"isTyping": True},
            )
            assert status == 200
        status, body, response = await _call(
            session, "POST", f"{base}/api/conversations/{conv}/typing", token, {"isTyping": True}
        )
        assert status == 429
        assert body["success"] is False and body["error"]["code"] == "rate_limited"
        assert 1 <= int(response.headers["Retry-After"]) <= 2
        # Another participant of the same conversation has a budget of their own.
        status, _, _ = await _call(
            session,
            "POST",
            f"{base}/api/conversations/{conv}/typing",
            staff_token,
            {"isTyping": True},
        )
        assert status == 200

        for _ in range(2):
            assert (
                await _call(session, "PUT", f"{base}/api/presence", token, {"status": "online"})
            )[0] == 200
        assert (await _call(session, "PUT", f"{base}/api/presence", token, {"status": "away"}))[
            0
        ] == 429

        # A batch is one request: four of five ids each spend the limit of 4, the fifth is over.
        for _ in range(4):
            ids = [str(uuid.uuid4()) for _ in range(5)]
            status, body, _ = await _call(
                session, "POST", f"{base}/api/messages/read", staff_token, {"messageIds": ids}
            )
            assert status == 404, body  # past the limit, then no such messages
        status, body, _ = await _call(
            session, "POST", f"{base}/api/messages/read", staff_token, {"messageIds": ids}
        )
        assert status == 429 and "read receipts" in body["error"]["message"]

        # The windows move on: after Retry-After, typing works again (bounded wait for the reset).
        async with asyncio.timeout(5):
            while (
                await _call(
                    session,
                    "POST",
                    f"{base}/api/conversations/{conv}/typing",
                    token,
                    {"isTyping": False},
                )
            )[0] == 429:
                await asyncio.sleep(0.2)


async def test_general_request_limit_per_token(database_url: str, seed: Seed) -> None:
    async with (
        running_server(database_url, rate_requests="5/minute") as srv,
        aiohttp.ClientSession() as session,
    ):
        _, token = await seed.customer()
        _, other = await seed.customer()
        statuses = [
            (await _call(session, "GET", f"{srv.http_url}/api/conversations", token))[0]
            for _ in range(6)
        ]
        assert statuses == [200] * 5 + [429]
        assert (await _call(session, "GET", f"{srv.http_url}/api/conversations", other))[0] == 200
