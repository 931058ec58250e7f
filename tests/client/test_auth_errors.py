"""A wrong key is an :class:`AuthenticationError` at once, not a timeout after the join's bound."""

from __future__ import annotations

import time

import pytest

from realtime_messaging import RealtimeMessagingManager
from realtime_messaging.client import AuthenticationError, RealtimeError
from realtime_messaging.keys import anon_key
from tests.conftest import RunningServer, Seed


@pytest.mark.parametrize(
    "key", [anon_key("another-secret-" + "z" * 40), "not-a-jwt"], ids=["other-secret", "garbage"]
)
async def test_a_wrong_anon_key_fails_subscribe_at_once(
    server: RunningServer, seed: Seed, key: str
) -> None:
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    errors: list[RealtimeError] = []
    async with RealtimeMessagingManager(
        server.http_url, key, access_token=portal, on_error=errors.append
    ) as manager:
        started = time.monotonic()
        with pytest.raises(AuthenticationError) as raised:
            await manager.subscribe_to_conversation(conversation)
        assert time.monotonic() - started < 2.0
        assert raised.value.status == 401 and raised.value.message
        assert any(isinstance(e, AuthenticationError) for e in errors)
        # Not retried in the background: the next subscribe tries again, and fails the same.
        with pytest.raises(AuthenticationError):
            await manager.subscribe_to_customer_messages(customer)


async def test_the_right_key_still_subscribes(server: RunningServer, seed: Seed) -> None:
    customer, portal = await seed.customer()
    async with RealtimeMessagingManager(
        server.http_url, server.anon_key, access_token=portal
    ) as manager:
        sub = await manager.subscribe_to_customer_messages(customer)
        assert sub.state == "joined"
