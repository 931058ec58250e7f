"""The desk's tools in a real browser: editing and deleting, files, search and the queues.

As in ``test_inbox.py``, each test runs a server of its own on a fresh database, opens the
staff link and the customer link of ``rtm demo`` in two browser contexts and checks what each
person sees, waiting with Playwright's own conditions, never with sleeps.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import AsyncIterator
from uuid import UUID

import asyncpg
import pytest
from playwright.async_api import Browser, FilePayload, Locator, Page, expect

from realtime_messaging.demo import Demo, create_demo
from realtime_messaging.tokens import mint_staff_token
from tests.conftest import RestartableServer, fresh_database

from .conftest import PHONE, open_page, screenshot

#: What "live" means to the people at the ends (as in test_inbox.py).
LIVE = 1_000  # ms
SUBJECT = "My order has not arrived"
FIRST = "Hello! My order has not arrived yet."


class World:
    def __init__(self, server: RestartableServer, demo: Demo, pool: asyncpg.Pool) -> None:
        self.server = server
        self.demo = demo
        self.pool = pool

    @property
    def url(self) -> str:
        assert self.server.server is not None
        return self.server.server.http_url

    @property
    def secret(self) -> str:
        assert self.server.server is not None
        return self.server.server.secret

    def links(self) -> tuple[str, str]:
        return self.demo.links(self.url)

    async def conversation(
        self, customer: str, subject: str, first: str, *, assigned: bool, status: str = "open"
    ) -> UUID:
        """Another customer's conversation with a first message, as the database owner."""
        async with self.pool.acquire() as conn, conn.transaction():
            customer_id = await conn.fetchval(
                "INSERT INTO customers (name, email) VALUES ($1, $2) RETURNING id",
                customer,
                f"{customer.split()[0].lower()}@example.com",
            )
            conversation_id: UUID = await conn.fetchval(
                "INSERT INTO conversations (customer_id, subject, assigned_user_id, status) "
                "VALUES ($1, $2, $3, $4) RETURNING id",
                customer_id,
                subject,
                self.demo.user_id if assigned else None,
                status,
            )
            await conn.execute(
                "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
                "VALUES ($1, 'customer', $2, $3)",
                conversation_id,
                customer_id,
                first,
            )
        return conversation_id


@pytest.fixture
async def world(admin_url: str) -> AsyncIterator[World]:
    async with fresh_database(admin_url) as url:
        server = RestartableServer(url)
        srv = await server.start()
        try:
            async with asyncpg.create_pool(url, min_size=1, max_size=2) as pool:
                async with pool.acquire() as conn:
                    demo = await create_demo(conn, srv.secret)
                yield World(server, demo, pool)
        finally:
            await server.stop()


def _messages(page: Page) -> Locator:
    """The open conversation's messages (the list's previews repeat their text)."""
    return page.get_by_role("region", name="Messages")


def _message(page: Page, text: str) -> Locator:
    return _messages(page).locator(".msg").filter(has_text=text)


async def _open_both(
    browser: Browser, world: World, customer_viewport: dict[str, int] | None = None
) -> tuple[Page, Page]:
    staff_link, customer_link = world.links()
    _, staff = await open_page(browser, staff_link)
    if customer_viewport is None:
        _, customer = await open_page(browser, customer_link)
    else:
        _, customer = await open_page(browser, customer_link, customer_viewport)
    await staff.get_by_role("button", name=SUBJECT).first.click()
    await expect(_messages(staff).get_by_text(FIRST)).to_be_visible()
    await expect(_messages(customer).get_by_text(FIRST)).to_be_visible()
    return staff, customer


async def _send(page: Page, label: str, text: str) -> None:
    box = page.get_by_label(label)
    await box.fill(text)
    await box.press("Enter")


def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A small valid PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\x00" + bytes(rgb) * width
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


async def test_an_edit_shows_edited_on_the_other_side_live(browser: Browser, world: World) -> None:
    staff, customer = await _open_both(browser, world)
    await _send(customer, "Message to support", "I ordered a lamp")
    await expect(_message(staff, "I ordered a lamp")).to_be_visible(timeout=LIVE)

    # Only one's own messages can be edited: the agent's own, not the customer's.
    await expect(
        _message(staff, "I ordered a lamp").get_by_role("button", name="Edit message")
    ).to_have_count(0)

    mine = _message(customer, "I ordered a lamp")
    await mine.get_by_role("button", name="Edit message").click()
    box = customer.get_by_label("Edit your message")
    await expect(box).to_be_focused()
    await box.fill("I ordered a desk lamp, order 42")
    await screenshot(customer, "portal-editing")
    await box.press("Enter")

    edited = _message(staff, "I ordered a desk lamp, order 42")
    await expect(edited).to_be_visible(timeout=LIVE)
    await expect(edited.locator(".edited")).to_have_text("edited")
    await expect(
        staff.get_by_role("status").filter(
            has_text="Customer edited a message: I ordered a desk lamp"
        )
    ).to_have_count(1)
    await expect(_messages(staff).get_by_text("I ordered a lamp", exact=True)).to_have_count(0)
    await expect(
        _message(customer, "I ordered a desk lamp, order 42").locator(".edited")
    ).to_be_visible()
    # The edit reaches the database as the server keeps it.
    content = await world.pool.fetchval(
        "SELECT content FROM customer_messages WHERE edited_at IS NOT NULL"
    )
    assert content == "I ordered a desk lamp, order 42"
    await edited.hover()
    await screenshot(staff, "inbox-edited")

    # Escape leaves the message as it was.
    await _message(customer, "order 42").get_by_role("button", name="Edit message").click()
    await customer.get_by_label("Edit your message").fill("something else")
    await customer.get_by_label("Edit your message").press("Escape")
    await expect(customer.get_by_label("Edit your message")).to_have_count(0)
    await expect(
        _message(customer, "order 42").get_by_role("button", name="Edit message")
    ).to_be_focused()
    await expect(_message(customer, "I ordered a desk lamp, order 42")).to_be_visible()


async def test_a_delete_shows_the_tombstone_on_the_other_side_live(
    browser: Browser, world: World
) -> None:
    staff, customer = await _open_both(browser, world)
    await _send(staff, "Message to the customer", "Your voucher code is 7731")
    await expect(_message(customer, "Your voucher code is 7731")).to_be_visible(timeout=LIVE)

    own = _message(staff, "Your voucher code is 7731")
    await own.get_by_role("button", name="Delete message").click()
    confirm = staff.get_by_role("group", name="Confirm deleting the message")
    # The confirmation takes the focus; Escape backs out and nothing is deleted.
    await expect(confirm.get_by_role("button", name="Delete")).to_be_focused()
    await staff.keyboard.press("Escape")
    await expect(confirm).to_have_count(0)
    await expect(own.get_by_role("button", name="Delete message")).to_be_focused()
    await own.get_by_role("button", name="Delete message").press("Enter")
    await expect(confirm).to_be_visible()
    await screenshot(staff, "inbox-delete-confirm")
    await confirm.get_by_role("button", name="Delete").click()

    await expect(_messages(customer).get_by_text("Message deleted")).to_be_visible(timeout=LIVE)
    await expect(_messages(customer).get_by_text("7731")).to_have_count(0)
    # Screen readers hear it too (the polite live region).
    await expect(
        customer.get_by_role("status").filter(has_text="Agent deleted a message")
    ).to_have_count(1)
    await expect(_messages(staff).get_by_text("Message deleted")).to_be_visible()
    await expect(_messages(staff).get_by_text("7731")).to_have_count(0)
    assert (
        await world.pool.fetchval(
            "SELECT count(*) FROM customer_messages WHERE deleted_at IS NOT NULL AND content = ''"
        )
        == 1
    )
    await screenshot(customer, "portal-deleted")

    # The agent handling the conversation may delete the customer's message too.
    await _send(customer, "Message to support", "My card number is 4111")
    await expect(_message(staff, "My card number is 4111")).to_be_visible(timeout=LIVE)
    await (
        _message(staff, "My card number is 4111")
        .get_by_role("button", name="Delete message")
        .click()
    )
    await (
        staff.get_by_role("group", name="Confirm deleting the message")
        .get_by_role("button", name="Delete")
        .click()
    )
    await expect(_messages(customer).get_by_text("4111")).to_have_count(0, timeout=LIVE)
    await expect(_messages(customer).get_by_text("Message deleted")).to_have_count(2)


async def test_a_refused_delete_is_reported(browser: Browser, world: World) -> None:
    """Another agent, not handling the conversation: the server refuses, the page says so."""
    async with world.pool.acquire() as conn:
        other = await conn.fetchval(
            "INSERT INTO users (name, email) VALUES ('Jo (support)', 'jo@example.com') RETURNING id"
        )
    token = mint_staff_token(world.secret, other)
    _, staff = await open_page(browser, f"{world.url}/#token={token}")
    await staff.get_by_role("button", name=SUBJECT).first.click()
    first = _message(staff, FIRST)
    await first.get_by_role("button", name="Delete message").click()
    await (
        staff.get_by_role("group", name="Confirm deleting the message")
        .get_by_role("button", name="Delete")
        .click()
    )
    await expect(first.get_by_role("alert")).to_contain_text("You cannot delete this message")
    await expect(first.locator(".bubble")).to_have_text(
        re.compile("Hello! My order has not arrived")
    )
    assert (
        await world.pool.fetchval(
            "SELECT count(*) FROM customer_messages WHERE deleted_at IS NOT NULL"
        )
        == 0
    )
    await screenshot(staff, "inbox-delete-refused")


async def test_an_image_shows_as_a_preview_on_the_other_side(
    browser: Browser, world: World
) -> None:
    staff, customer = await _open_both(browser, world, PHONE)
    await customer.get_by_label("Attach a file").set_input_files(
        [
            FilePayload(
                name="parcel.png", mimeType="image/png", buffer=_png(160, 90, (214, 92, 40))
            ),
            FilePayload(
                name="receipt.pdf", mimeType="application/pdf", buffer=b"%PDF-1.4\n%%EOF\n"
            ),
        ]
    )
    pending = customer.get_by_role("list", name="Files to send")
    await expect(pending.get_by_text("parcel.png")).to_be_visible()
    send = customer.get_by_role("button", name="Send")
    await expect(send).to_be_enabled()  # both uploaded; no text needed
    await screenshot(customer, "portal-phone-attach")
    await send.click()
    await expect(pending).to_have_count(0)

    image = _messages(staff).get_by_role("img", name="parcel.png")
    await expect(image).to_be_visible(timeout=5_000)
    await staff.wait_for_function(
        "img => img.complete && img.naturalWidth === 160", arg=await image.element_handle()
    )
    link = _messages(staff).get_by_role("link", name=re.compile(r"^Download receipt\.pdf"))
    await expect(link).to_be_visible()
    await expect(_messages(customer).get_by_role("img", name="parcel.png")).to_be_visible()
    row = await world.pool.fetchrow(
        "SELECT content, jsonb_array_length(attachments) AS files FROM customer_messages "
        "WHERE sender_type = 'customer' ORDER BY created_at DESC LIMIT 1"
    )
    assert (row["content"], row["files"]) == ("", 2)
    await screenshot(staff, "inbox-image-preview")
    await screenshot(customer, "portal-phone-image")

    # The download link fetches a signed link and the file comes as a download.
    async with staff.expect_download() as download_info:
        await link.click()
    download = await download_info.value
    assert download.suggested_filename == "receipt.pdf"


async def test_search_finds_a_message_and_opens_its_conversation(
    browser: Browser, world: World
) -> None:
    await world.conversation(
        "Kim (customer)",
        "Broken blender",
        "The blender & the toaster <b>both</b> arrived broken",
        assigned=False,
    )
    staff_link, _ = world.links()
    _, staff = await open_page(browser, staff_link)
    await expect(staff.get_by_role("button", name=SUBJECT).first).to_be_visible()

    await staff.get_by_label("Search messages").fill("blender")
    results = staff.get_by_role("list", name="Search results")
    result = results.get_by_role("button").filter(has_text="Broken blender")
    await expect(result).to_have_count(1)
    await expect(result.locator("mark")).to_have_text(["blender"])
    # The snippet's text is text: an ampersand shows as one, no markup of the message is made.
    await expect(result).to_contain_text("blender & the toaster")
    await expect(result.locator("b")).to_have_count(0)
    await expect(staff.get_by_role("status").filter(has_text="1 message found")).to_have_count(1)
    await screenshot(staff, "inbox-search")

    await result.click()
    found = _message(staff, "arrived broken")
    await expect(found).to_be_visible()
    await expect(found).to_have_class(re.compile(r"\bmsg-found\b"))
    await expect(staff.get_by_role("heading", name="Broken blender")).to_be_visible()
    await screenshot(staff, "inbox-search-opened")

    # Escape clears the search: the list is back.
    await staff.get_by_label("Search messages").press("Escape")
    await expect(results).to_have_count(0)
    await expect(staff.get_by_role("button", name=SUBJECT).first).to_be_visible()


#: A message the search tests look for, in Lee's "Long thread".
HIT = "My serial number is QX-7741-B"


async def _customer_writes(world: World, conversation: UUID, text: str, count: int) -> None:
    """``count`` messages from the conversation's customer: ``text`` and a number each."""
    await world.pool.execute(
        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
        "SELECT $1, 'customer', c.customer_id, $2 || g "
        "FROM conversations AS c, generate_series(1, $3) AS g WHERE c.id = $1",
        conversation,
        text,
        count,
    )


async def _searched(browser: Browser, world: World, later: int) -> tuple[UUID, Page, Locator]:
    """Lee's "Long thread" (the hit, then ``later`` messages), and the staff page that searched
    for the hit: its one result, not yet chosen."""
    conversation = await world.conversation("Lee (customer)", "Long thread", HIT, assigned=False)
    await _customer_writes(world, conversation, "and another detail number ", later)
    staff_link, _ = world.links()
    _, staff = await open_page(browser, staff_link)
    await staff.get_by_label("Search messages").fill("QX-7741-B")
    result = (
        staff.get_by_role("list", name="Search results")
        .get_by_role("button")
        .filter(has_text="Long thread")
    )
    await expect(result).to_have_count(1)
    return conversation, staff, result


async def test_a_search_hit_older_than_the_loaded_history_is_brought_into_view(
    browser: Browser, world: World
) -> None:
    """The first page of a conversation holds its newest 50 messages: a hit 120 messages back
    is looked for page by page and shown, without the person scrolling."""
    _, staff, result = await _searched(browser, world, 120)
    await result.click()
    found = _message(staff, "My serial number is")
    await expect(found).to_be_in_viewport(timeout=5_000)
    await expect(found).to_have_class(re.compile(r"\bmsg-found\b"))
    await screenshot(staff, "inbox-search-old-hit")


async def test_a_search_hit_stays_in_view_when_the_list_renders_before_its_scroll_event(
    browser: Browser, world: World
) -> None:
    """Regression (a CI run of 2026-12-06): the list keeps the view at the bottom while the
    reader is there, and learned that they no longer were only from the scroll event that
    bringing a hit into view fires a frame later. A render in between (a receipt, a new
    message) took the view back to the bottom and the hit out of sight. The page's scroll events
    are held back here, so that the render always comes first."""
    conversation, staff, result = await _searched(browser, world, 30)
    await staff.evaluate(
        "document.addEventListener('scroll', (e) => e.stopImmediatePropagation(), true)"
    )
    await result.click()
    found = _message(staff, "My serial number is")
    await expect(found).to_be_in_viewport()
    await _customer_writes(world, conversation, "one more thing ", 1)
    await expect(_message(staff, "one more thing 1")).to_have_count(1)
    await expect(found).to_be_in_viewport()
    await screenshot(staff, "inbox-search-hit-kept")


async def test_messages_written_within_one_millisecond_show_in_the_order_written(
    browser: Browser, world: World
) -> None:
    """A multi-row insert (an import, a bot) writes several messages within a millisecond, their
    times a few microseconds apart: the list compared times to the millisecond and then by id
    (random), which shuffled them."""
    conversation, staff, result = await _searched(browser, world, 8)
    await result.click()
    texts = [HIT, *(f"and another detail number {n}" for n in range(1, 9))]
    await expect(_messages(staff).locator(".msg")).to_have_count(len(texts))
    await expect(_messages(staff).locator(".msg")).to_contain_text(texts)
    await _customer_writes(world, conversation, "live detail ", 6)
    live = [f"live detail {n}" for n in range(1, 7)]
    await expect(_messages(staff).locator(".msg")).to_contain_text(texts + live)


async def test_a_queue_filter_shows_only_its_conversations_and_its_count(
    browser: Browser, world: World
) -> None:
    await world.conversation(
        "Kim (customer)", "Unassigned question", "Is anyone there?", assigned=False
    )
    await world.conversation(
        "Lee (customer)", "Old closed case", "Thanks, all good", assigned=True, status="closed"
    )
    staff_link, _ = world.links()
    _, staff = await open_page(browser, staff_link)
    queues = staff.get_by_role("group", name="Show conversations")
    sidebar = staff.get_by_role("navigation")

    def queue(name: str) -> Locator:
        return queues.get_by_role("button", name=re.compile(f"^{name}"))

    await expect(queue("All").locator(".queue-count")).to_have_text("2")
    await expect(queue("Mine").locator(".queue-count")).to_have_text("1")
    await expect(queue("Unassigned").locator(".queue-count")).to_have_text("1")
    await expect(queue("Unread").locator(".queue-count")).to_have_text("2")
    await expect(sidebar.locator("button.conv")).to_have_count(2)

    await queue("Unassigned").click()
    await expect(queue("Unassigned")).to_have_attribute("aria-pressed", "true")
    await expect(sidebar.locator("button.conv")).to_have_count(1)
    await expect(sidebar.get_by_role("button", name="Unassigned question")).to_be_visible()
    await screenshot(staff, "inbox-filter-unassigned")

    # A new unassigned conversation arrives: its count and the list follow.
    await world.conversation("Max (customer)", "Another new question", "Hello?", assigned=False)
    await expect(queue("Unassigned").locator(".queue-count")).to_have_text("2", timeout=5_000)
    await expect(sidebar.get_by_role("button", name="Another new question")).to_be_visible()
    await expect(sidebar.locator("button.conv")).to_have_count(2)

    await queue("Mine").click()
    await expect(sidebar.locator("button.conv")).to_have_count(1)
    await expect(sidebar.get_by_role("button", name=SUBJECT)).to_be_visible()

    await staff.get_by_label("Status").select_option("closed")
    await expect(sidebar.locator("button.conv")).to_have_count(1)
    await expect(sidebar.get_by_role("button", name="Old closed case")).to_be_visible()
    await expect(queue("All").locator(".queue-count")).to_have_text("1")
    await expect(staff.get_by_label("Status").locator("option[value=open]")).to_have_text(
        "Open (3)"
    )

    # On a phone the search box and the queues stay usable above the list.
    await staff.set_viewport_size(PHONE)  # type: ignore[arg-type]
    await expect(queue("Unread")).to_be_in_viewport()
    await expect(staff.get_by_label("Search messages")).to_be_in_viewport()
    await screenshot(staff, "inbox-phone-queues")
