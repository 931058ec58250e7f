"""GET /api/search: ranked full-text search over the messages the caller may see, with snippets
that are safe HTML, paged by cursor, bounded."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import asyncpg

from realtime_messaging.server.api.search import CANDIDATES
from tests.conftest import Seed

from .conftest import Http, assert_error, assert_ok, insert_message

RESULT_KEYS = {
    "messageId",
    "conversationId",
    "senderType",
    "senderId",
    "createdAt",
    "rank",
    "snippet",
}


def word() -> str:
    """A word no other test's message contains (the test database is shared)."""
    return "w" + uuid.uuid4().hex[:12]


async def search(http: Http, token: str, **params: str) -> dict[str, Any]:
    status, reply, _ = await http.call("GET", "/api/search", token, params=params)
    data: dict[str, Any] = assert_ok(status, reply)
    assert set(data) == {"results", "nextCursor"}
    assert all(set(r) == RESULT_KEYS for r in data["results"])
    return data


async def test_matches_are_ranked_and_highlighted(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    _, staff = await seed.staff()
    w = word()
    once = await insert_message(pool, conversation, "customer", customer, f"about {w} only once")
    thrice = await insert_message(pool, conversation, "customer", customer, f"{w} {w} and {w}")
    await insert_message(pool, conversation, "customer", customer, "nothing to see here")

    for token in (portal, staff):
        results = (await search(http, token, q=w))["results"]
        assert [r["messageId"] for r in results] == [str(thrice), str(once)]
        assert results[0]["rank"] > results[1]["rank"] > 0
        assert results[1]["snippet"] == f"about <mark>{w}</mark> only once"
        assert results[0]["conversationId"] == str(conversation)
        assert results[0]["senderType"] == "customer"
        assert results[0]["senderId"] == str(customer)
    # Case does not matter ('simple' lowercases); the user's syntax is websearch's.
    assert len((await search(http, staff, q=w.upper()))["results"]) == 2
    assert (await search(http, staff, q=f"{w} -once"))["results"][0]["messageId"] == str(thrice)
    assert len((await search(http, staff, q=f"{w} -once"))["results"]) == 1
    assert len((await search(http, staff, q=f'"about {w}"'))["results"]) == 1
    assert (await search(http, staff, q=f"{w} missingword{w}"))["results"] == []


async def test_snippets_are_escaped_html(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    w = word()
    hostile = f'{w} 5 > 3 & "q" it\'s \ue000fake\ue001 <img src=x onerror=alert(1)> {w}'
    await insert_message(pool, conversation, "customer", customer, hostile)
    [result] = (await search(http, portal, q=w))["results"]
    snippet = result["snippet"]
    # Markup-like text is left out by PostgreSQL's parser; whatever remains is escaped, and the
    # only tags are the marks around the matches (the private-use markers in the text are not).
    assert "\ue000" not in snippet and "\ue001" not in snippet
    bare = snippet.replace("<mark>", "").replace("</mark>", "")
    assert not {"<", ">", '"', "'"} & set(bare), snippet
    assert snippet.count("<mark>") == snippet.count("</mark>") == 2, snippet
    assert snippet.startswith(f"<mark>{w}</mark> 5 &gt; 3 &amp; &quot;q&quot; it&#x27;s fake")
    assert snippet.endswith(f"<mark>{w}</mark>")


async def test_a_customer_finds_only_their_own_and_staff_find_all(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    a, portal_a = await seed.customer()
    b, portal_b = await seed.customer()
    conv_a, conv_b = await seed.conversation(a), await seed.conversation(b)
    staff_id, staff = await seed.staff()
    w = word()
    in_a = await insert_message(pool, conv_a, "customer", a, f"{w} from a")
    in_b = await insert_message(pool, conv_b, "staff", staff_id, f"{w} to b")

    assert [r["messageId"] for r in (await search(http, portal_a, q=w))["results"]] == [str(in_a)]
    assert [r["messageId"] for r in (await search(http, portal_b, q=w))["results"]] == [str(in_b)]
    found = {r["messageId"] for r in (await search(http, staff, q=w))["results"]}
    assert found == {str(in_a), str(in_b)}
    # Within one conversation; another customer's conversation is not found, as an unknown one.
    only_b = await search(http, staff, q=w, conversationId=str(conv_b))
    assert [r["messageId"] for r in only_b["results"]] == [str(in_b)]
    status, theirs, _ = await http.call(
        "GET", "/api/search", portal_a, params={"q": w, "conversationId": str(conv_b)}
    )
    assert_error(status, theirs, 404, "not_found", "conversation not found")
    status, unknown, _ = await http.call(
        "GET", "/api/search", portal_a, params={"q": w, "conversationId": str(uuid.uuid4())}
    )
    assert_error(status, unknown, 404, "not_found")
    assert theirs["error"] == unknown["error"]


async def test_the_function_alone_keeps_a_customer_to_their_conversations(
    pool: asyncpg.Pool, seed: Seed
) -> None:
    """rtm.search_messages runs without row rules; it narrows a customer's search itself."""
    a, _ = await seed.customer()
    b, _ = await seed.customer()
    conv_b = await seed.conversation(b)
    w = word()
    await insert_message(pool, conv_b, "customer", b, w)
    claims = f'{{"role": "authenticated", "sub": "{a}", "customer_id": "{a}"}}'
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT set_config('role', 'authenticated', true), "
            "set_config('request.jwt.claims', $1, true)",
            claims,
        )
        for conversations in (None, [conv_b]):
            rows = await conn.fetch(
                "SELECT * FROM rtm.search_messages(to_tsquery('simple', $1), $2::uuid[], "
                "NULL, NULL, NULL, 10, 500)",
                w,
                conversations,
            )
            assert rows == []


async def test_pages_follow_the_ranking_without_duplicates_or_gaps(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    w = word()
    for i in range(23):
        # Ranks in a few tiers (how often the word occurs), times break the ties.
        await insert_message(
            pool, conversation, "customer", customer, " ".join([w] * (1 + i % 3) + ["filler"] * 5)
        )
    whole = (await search(http, portal, q=w, limit="50"))["results"]
    assert len(whole) == 23
    keys = [(-r["rank"], r["createdAt"]) for r in whole]
    assert [k[0] for k in keys] == sorted(k[0] for k in keys)
    for limit in (1, 5, 10, 23):
        seen: list[str] = []
        params = {"q": w, "limit": str(limit)}
        for _ in range(30):
            page = await search(http, portal, **params)
            seen += [r["messageId"] for r in page["results"]]
            if page["nextCursor"] is None:
                break
            assert len(page["results"]) == limit
            params["cursor"] = page["nextCursor"]
        assert seen == [r["messageId"] for r in whole], limit


async def test_only_the_newest_matches_are_ranked(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    """A word in more messages than CANDIDATES: the best of the newest CANDIDATES come first,
    and an older message, however good a match, is not among the results."""
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    w = word()
    oldest = await insert_message(pool, conversation, "customer", customer, f"{w} {w} {w} {w}")
    await pool.execute(
        "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
        "SELECT $1, 'customer', $2, $3 || ' filler ' || g FROM generate_series(1, $4) g",
        conversation,
        customer,
        w,
        CANDIDATES - 1,
    )
    best = await insert_message(pool, conversation, "customer", customer, f"{w} {w} {w} x")
    seen: list[str] = []
    params = {"q": w, "limit": "50"}
    for _ in range(CANDIDATES // 50 + 2):
        page = await search(http, portal, **params)
        seen += [r["messageId"] for r in page["results"]]
        if page["nextCursor"] is None:
            break
        params["cursor"] = page["nextCursor"]
    assert len(seen) == len(set(seen)) == CANDIDATES
    assert seen[0] == str(best) and str(oldest) not in seen
    # Narrowed to fewer matches, the old one is found again.
    assert [
        r["messageId"] for r in (await search(http, portal, q=f'"{w} {w} {w} {w}"'))["results"]
    ] == [str(oldest)]


async def test_deleted_and_edited_messages(http: Http, seed: Seed, pool: asyncpg.Pool) -> None:
    customer, portal = await seed.customer()
    conversation = await seed.conversation(customer)
    old, new, gone = word(), word(), word()
    edited = await insert_message(pool, conversation, "customer", customer, f"{old} text")
    deleted = await insert_message(pool, conversation, "customer", customer, f"{gone} text")
    assert len((await search(http, portal, q=gone))["results"]) == 1
    await pool.execute("UPDATE customer_messages SET content = $2 WHERE id = $1", edited, new)
    # Marked deleted (as a tombstone is): not found, even were its content kept.
    await pool.execute("UPDATE customer_messages SET deleted_at = now() WHERE id = $1", deleted)
    assert (await search(http, portal, q=old))["results"] == []
    assert [r["messageId"] for r in (await search(http, portal, q=new))["results"]] == [str(edited)]
    assert (await search(http, portal, q=gone))["results"] == []


async def test_bounds_and_bad_queries(http: Http, seed: Seed) -> None:
    _, portal = await seed.customer()
    for params, fragment in (
        ({}, "q: Field required"),
        ({"q": ""}, "q: String should have at least 1 character"),
        ({"q": "   "}, "q: Value error, must not be blank"),
        ({"q": "x" * 201}, "q: String should have at most 200 characters"),
        ({"q": "a\x00b"}, "q: Value error, must not contain NUL"),
        ({"q": "a", "limit": "0"}, "limit: Input should be greater than or equal to 1"),
        ({"q": "a", "limit": "51"}, "limit: Input should be less than or equal to 50"),
        ({"q": "a", "cursor": "nope"}, "cursor: not a cursor this API returned"),
        ({"q": "a", "cursor": "x" * 301}, "cursor: String should have at most 300"),
        ({"q": "a", "conversationId": "7"}, "conversationId"),
        ({"q": "a", "sort": "new"}, "sort: Extra inputs are not permitted"),
    ):
        status, reply, _ = await http.call("GET", "/api/search", portal, params=params)
        assert_error(status, reply, 422, "validation_error", fragment)
    # Forged cursors: bad rank, no time zone, a time PostgreSQL cannot hold.
    for raw in (
        f"nan|2024-01-01T00:00:00+00:00|{uuid.uuid4()}",
        f"1e99|2024-01-01T00:00:00+00:00|{uuid.uuid4()}",
        f"0.1|2024-01-01T00:00:00|{uuid.uuid4()}",
        f"0.1|0001-01-01T00:00:00+05:00|{uuid.uuid4()}",
        "0.1|2024-01-01T00:00:00+00:00",
    ):
        cursor = base64.urlsafe_b64encode(raw.encode()).decode()
        status, reply, _ = await http.call(
            "GET", "/api/search", portal, params={"q": "a", "cursor": cursor}
        )
        assert_error(status, reply, 422, "validation_error", "cursor")
    # Only punctuation: no words to look for, so nothing found (not an error).
    assert (await search(http, portal, q="!!! ((( &&&"))["results"] == []
    # A token is required.
    status, reply, _ = await http.call("GET", "/api/search", None, params={"q": "a"})
    assert_error(status, reply, 401, "unauthorized")
