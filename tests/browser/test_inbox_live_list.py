"""The staff inbox follows conversation changes made elsewhere, live: another agent assigning or
closing a conversation through the API moves the queue counts and the list without a reload,
far within the 60 s fallback poll (docs/web.md "Queues"). The lists' presence is live too, the
customer's list of their agents included. Waits are Playwright's conditions on the page, never
sleeps.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from realtime_messaging.demo import Demo, create_demo
from realtime_messaging.tokens import hash_portal_token, mint_staff_token, new_portal_token
from tests.conftest import RunningServer, fresh_database, running_server

from .conftest import open_page, screenshot

#: Live means within a few seconds (the counts are coalesced for a second); the fallback poll
#: is a minute, so it cannot be what passes these waits.
LIVE = 5_000  # ms
SUBJECT = "My order has not arrived"
OTHER = "Unassigned question"


@dataclass
class Desk:
    server: RunningServer
    demo: Demo
    pool: asyncpg.Pool
    other_conversation: UUID
    #: Another staff user's token: the changes are theirs, made outside the page.
    colleague: str
    colleague_id: UUID
    #: The portal token of the customer of the other conversation.
    kim: str

    async def kim_is(self, status: str) -> None:
        """The other conversation's customer sets her presence (from another tab or app)."""
        await self._presence(self.kim, status)

    async def colleague_is(self, status: str) -> None:
        """The colleague sets their presence (from their own inbox)."""
        await self._presence(self.colleague, status)

    async def _presence(self, token: str, status: str) -> None:
        headers = {"apikey": self.server.anon_key, "Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession() as http,
            http.put(
                f"{self.server.http_url}/api/presence", json={"status": status}, headers=headers
            ) as r,
        ):
            assert r.status == 200, await r.text()

    async def patch(self, conversation: UUID, body: dict[str, Any]) -> None:
        headers = {"apikey": self.server.anon_key, "Authorization": f"Bearer {self.colleague}"}
        url = f"{self.server.http_url}/api/conversations/{conversation}"
        async with (
            aiohttp.ClientSession() as http,
            http.patch(url, json=body, headers=headers) as r,
        ):
            assert r.status == 200, await r.text()


@pytest.fixture
async def desk(admin_url: str) -> AsyncIterator[Desk]:
    """A server on a database of its own (the counts are of every conversation): the demo's
    assigned conversation, an unassigned one, and a colleague."""
    async with fresh_database(admin_url) as url, running_server(url) as server:
        async with asyncpg.create_pool(url, min_size=1, max_size=2) as pool:
            async with pool.acquire() as conn:
                demo = await create_demo(conn, server.secret)
                customer = await conn.fetchval(
                    "INSERT INTO customers (name, email) VALUES ('Kim (customer)', "
                    "'kim@example.com') RETURNING id"
                )
                other = await conn.fetchval(
                    "INSERT INTO conversations (customer_id, subject) VALUES ($1, $2) RETURNING id",
                    customer,
                    OTHER,
                )
                colleague_id = await conn.fetchval(
                    "INSERT INTO users (name, email) VALUES ('Robin (support)', "
                    "'robin@example.com') RETURNING id"
                )
                kim = new_portal_token()
                await conn.execute(
                    "INSERT INTO portal_tokens (token_hash, customer_id, expires_at) "
                    "VALUES ($1, $2, now() + interval '1 hour')",
                    hash_portal_token(kim),
                    customer,
                )
            colleague = mint_staff_token(server.secret, colleague_id)
            yield Desk(server, demo, pool, other, colleague, colleague_id, kim)


def _queue(page: Page, name: str) -> Locator:
    queues = page.get_by_role("group", name="Show conversations")
    return queues.get_by_role("button", name=re.compile(f"^{name}"))


def _count(page: Page, name: str) -> Locator:
    return _queue(page, name).locator(".queue-count")


async def test_assigning_and_closing_elsewhere_moves_the_counts_and_the_list_live(
    browser: Browser, desk: Desk
) -> None:
    staff_link, _ = desk.demo.links(desk.server.http_url)
    _, staff = await open_page(browser, staff_link)
    sidebar = staff.get_by_role("navigation")
    conversations = sidebar.locator("button.conv")
    await expect(_count(staff, "All")).to_have_text("2")
    await expect(_count(staff, "Mine")).to_have_text("1")
    await expect(_count(staff, "Unassigned")).to_have_text("1")
    await expect(conversations).to_have_count(2)

    # On the Unassigned queue, a colleague takes the unassigned conversation: it leaves.
    await _queue(staff, "Unassigned").click()
    await expect(conversations).to_have_count(1)
    await expect(sidebar.get_by_role("button", name=OTHER)).to_be_visible()
    await desk.patch(desk.other_conversation, {"assignedUserId": str(desk.colleague_id)})
    await expect(_count(staff, "Unassigned")).to_have_text("0", timeout=LIVE)
    await expect(conversations).to_have_count(0, timeout=LIVE)
    await expect(sidebar.get_by_text("No conversations here.")).to_be_visible()

    # On All, the colleague closes the agent's own conversation: it leaves Open, and the
    # counts of All, Mine and of the statuses follow.
    await _queue(staff, "All").click()
    await expect(conversations).to_have_count(2)
    await desk.patch(desk.demo.conversation_id, {"status": "closed"})
    await expect(_count(staff, "All")).to_have_text("1", timeout=LIVE)
    await expect(_count(staff, "Mine")).to_have_text("0", timeout=LIVE)
    await expect(conversations).to_have_count(1, timeout=LIVE)
    await expect(sidebar.get_by_role("button", name=SUBJECT)).to_have_count(0)
    status = staff.get_by_label("Status")
    await expect(status.locator("option[value=closed]")).to_have_text("Closed (1)", timeout=LIVE)
    await screenshot(staff, "inbox-live-closed-elsewhere")

    # Reopened elsewhere, it comes back into the list (fetched whole: its customer's name and
    # last message), and the counts with it.
    await desk.patch(desk.demo.conversation_id, {"status": "open"})
    await expect(sidebar.get_by_role("button", name=SUBJECT)).to_be_visible(timeout=LIVE)
    await expect(conversations).to_have_count(2)
    await expect(_count(staff, "All")).to_have_text("2", timeout=LIVE)
    await expect(_count(staff, "Mine")).to_have_text("1", timeout=LIVE)
    await screenshot(staff, "inbox-live-reopened-elsewhere")


async def test_a_status_change_shows_on_the_open_conversations_entry(
    browser: Browser, desk: Desk
) -> None:
    """An entry that stays in the list (status filter aside) shows its new status."""
    staff_link, _ = desk.demo.links(desk.server.http_url)
    _, staff = await open_page(browser, staff_link)
    entry = staff.get_by_role("navigation").get_by_role("button", name=SUBJECT)
    await entry.click()
    heading = staff.get_by_role("main")
    await expect(heading.get_by_text(SUBJECT).first).to_be_visible()
    await desk.patch(desk.demo.conversation_id, {"status": "pending"})
    # Out of the Open list, but the open conversation stays open, and says it is pending.
    await expect(entry).to_have_count(0, timeout=LIVE)
    await expect(heading.get_by_text(re.compile(r"\bpending\b")).first).to_be_visible(timeout=LIVE)
    await expect(_count(staff, "All")).to_have_text("1", timeout=LIVE)
    await expect(_count(staff, "Mine")).to_have_text("0", timeout=LIVE)
    status = staff.get_by_label("Status")
    await expect(status.locator("option[value=pending]")).to_have_text("Pending (1)", timeout=LIVE)
    await screenshot(staff, "inbox-live-pending-elsewhere")


async def test_the_lists_presence_follows_customers_not_open_live(
    browser: Browser, desk: Desk
) -> None:
    """A customer whose conversation is not open comes online and goes away: the dot and the
    word of her entry follow within seconds, not at the minute's poll."""
    staff_link, _ = desk.demo.links(desk.server.http_url)
    _, staff = await open_page(browser, staff_link)
    entry = staff.get_by_role("navigation").get_by_role("button", name=re.compile(OTHER))
    await expect(entry).to_be_visible()
    presence = entry.locator(".conv-presence")
    await expect(presence).to_contain_text("Offline")
    await desk.kim_is("online")
    await expect(presence).to_contain_text("Online", timeout=LIVE)
    await screenshot(staff, "inbox-live-list-presence")
    await desk.kim_is("away")
    await expect(presence).to_contain_text("Away", timeout=LIVE)


async def test_a_customers_list_follows_the_presence_of_an_agent_not_open_live(
    browser: Browser, desk: Desk
) -> None:
    """Kim's older conversation, assigned to Robin, is not the one open (her newest is): when
    Robin comes online and goes away, her entry for it says so within seconds, not at the
    minute's poll."""
    await desk.patch(desk.other_conversation, {"assignedUserId": str(desk.colleague_id)})
    await desk.pool.execute(
        "INSERT INTO conversations (customer_id, subject) "
        "SELECT customer_id, 'A newer question' FROM conversations WHERE id = $1",
        desk.other_conversation,
    )
    _, kim = await open_page(browser, f"{desk.server.http_url}/portal#token={desk.kim}")
    sidebar = kim.get_by_role("navigation")
    await expect(kim.get_by_role("main").get_by_text("A newer question").first).to_be_visible()
    presence = sidebar.get_by_role("button", name=re.compile(OTHER)).locator(".conv-presence")
    await expect(presence).to_contain_text("Waiting for an agent")
    await desk.colleague_is("online")
    await expect(presence).to_contain_text("Agent online", timeout=LIVE)
    await screenshot(kim, "portal-live-list-agent-presence")
    await desk.colleague_is("away")
    await expect(presence).to_contain_text("Agent away", timeout=LIVE)
