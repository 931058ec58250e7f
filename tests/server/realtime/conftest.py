"""A conversation with both its participants connected: the customer's device and an agent."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.conftest import RunningServer, Seed

from ..wsclient import RawSocket


@dataclass(frozen=True)
class Conversation:
    id: uuid.UUID
    customer: uuid.UUID
    staff: uuid.UUID
    #: Connected with the customer's portal token.
    device: RawSocket
    #: Connected with the staff user's token.
    agent: RawSocket


@pytest.fixture
async def conversation(server: RunningServer, seed: Seed) -> AsyncIterator[Conversation]:
    customer, portal = await seed.customer()
    staff, staff_token = await seed.staff()
    conversation_id = await seed.conversation(customer)
    device = await RawSocket.connect(server.ws_url, portal)
    agent = await RawSocket.connect(server.ws_url, staff_token)
    try:
        yield Conversation(conversation_id, customer, staff, device, agent)
    finally:
        await device.close()
        await agent.close()
