"""The documented subscription endpoint, byte for byte in shape (Subscription API of the design)."""

from __future__ import annotations

import itertools
import re
import uuid

from tests.conftest import RunningServer, Seed

from .conftest import UNKNOWN, Http, assert_error, assert_ok

PATH = "/api/messages/realtime/subscribe"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _check_documented_shape(reply: dict, server: RunningServer) -> dict:  # type: ignore[type-arg]
    """Exactly the documented keys at every level; returns data."""
    assert list(reply) == ["success", "version", "timestamp", "data"]
    assert reply["success"] is True and reply["version"] == "v1"
    assert TIMESTAMP.match(reply["timestamp"]), reply["timestamp"]
    data = reply["data"]
    assert list(data) == ["supabaseUrl", "supabaseKey", "channels", "features", "filters"]
    assert data["supabaseUrl"] == server.http_url
    assert data["supabaseKey"] == server.anon_key
    assert isinstance(data["channels"], list)
    assert all(isinstance(c, str) for c in data["channels"])
    assert list(data["features"]) == ["messages", "readReceipts", "typing", "presence"]
    assert all(isinstance(v, bool) for v in data["features"].values())
    assert list(data["filters"]) == ["userId", "customerId", "conversationId"]
    return data  # type: ignore[no-any-return]


async def test_the_documented_request_as_a_customer_and_as_staff(
    http: Http, server: RunningServer, seed: Seed
) -> None:
    customer, portal = await seed.customer()
    user, staff_token = await seed.staff()
    conv = await seed.conversation(customer)
    request = {
        "conversationId": str(conv),
        "includePresence": True,
        "includeTyping": True,
        "includeReadReceipts": True,
    }
    for token, filters in (
        (portal, {"userId": None, "customerId": str(customer), "conversationId": str(conv)}),
        (staff_token, {"userId": str(user), "customerId": None, "conversationId": str(conv)}),
    ):
        status, reply, response = await http.call("POST", PATH, token, json=request)
        assert status == 200 and response.content_type == "application/json"
        data = _check_documented_shape(reply, server)
        assert data["channels"] == [f"conversation:{conv}", f"presence:{conv}"]
        assert data["features"] == {
            "messages": True,
            "readReceipts": True,
            "typing": True,
            "presence": True,
        }
        assert data["filters"] == filters


async def test_channels_and_features_follow_the_include_flags(
    http: Http, server: RunningServer, seed: Seed
) -> None:
    customer, portal = await seed.customer()
    conv = await seed.conversation(customer)
    for presence, typing, receipts in itertools.product((True, False), repeat=3):
        body = {
            "conversationId": str(conv),
            "includePresence": presence,
            "includeTyping": typing,
            "includeReadReceipts": receipts,
        }
        status, reply, _ = await http.call("POST", PATH, portal, json=body)
        assert status == 200
        data = _check_documented_shape(reply, server)
        expected = [f"conversation:{conv}"] + ([f"presence:{conv}"] if presence else [])
        assert data["channels"] == expected, body
        assert data["features"] == {
            "messages": True,
            "readReceipts": receipts,
            "typing": typing,
            "presence": presence,
        }, body
    # The flags default to true.
    status, reply, _ = await http.call("POST", PATH, portal, json={"conversationId": str(conv)})
    data = _check_documented_shape(reply, server)
    assert data["channels"] == [f"conversation:{conv}", f"presence:{conv}"]
    assert all(data["features"].values())


async def test_without_a_conversation_the_callers_own_channel(
    http: Http, server: RunningServer, seed: Seed
) -> None:
    customer, portal = await seed.customer()
    user, staff_token = await seed.staff()
    for token, channel, filters in (
        (
            portal,
            f"customer:{customer}:messages",
            {"userId": None, "customerId": str(customer), "conversationId": None},
        ),
        (
            staff_token,
            f"staff:{user}:messages",
            {"userId": str(user), "customerId": None, "conversationId": None},
        ),
    ):
        for body in ({}, {"conversationId": None}, None):
            status, reply, _ = await http.call("POST", PATH, token, json=body)
            assert status == 200, reply
            data = _check_documented_shape(reply, server)
            assert data["channels"] == [channel]
            assert data["filters"] == filters
            # Presence is per conversation: without one there is no presence channel.
            assert data["features"] == {
                "messages": True,
                "readReceipts": True,
                "typing": True,
                "presence": False,
            }
        status, reply, _ = await http.call(
            "POST", PATH, token, json={"includeTyping": False, "includeReadReceipts": False}
        )
        data = _check_documented_shape(reply, server)
        assert data["features"] == {
            "messages": True,
            "readReceipts": False,
            "typing": False,
            "presence": False,
        }


async def test_another_customers_conversation_is_not_found(http: Http, seed: Seed) -> None:
    _, portal = await seed.customer()
    other, _ = await seed.customer()
    theirs = await seed.conversation(other)
    status, theirs_reply, _ = await http.call(
        "POST", PATH, portal, json={"conversationId": str(theirs)}
    )
    assert_error(status, theirs_reply, 404, "not_found", "conversation not found")
    status, unknown_reply, _ = await http.call(
        "POST", PATH, portal, json={"conversationId": UNKNOWN}
    )
    assert_error(status, unknown_reply, 404, "not_found")
    # Nothing tells the two apart.
    assert theirs_reply["error"] == unknown_reply["error"]
    # Staff see it; an unknown one is 404 for staff too.
    _, staff_token = await seed.staff()
    assert (await http.call("POST", PATH, staff_token, json={"conversationId": str(theirs)}))[
        0
    ] == 200
    status, reply, _ = await http.call("POST", PATH, staff_token, json={"conversationId": UNKNOWN})
    assert_error(status, reply, 404, "not_found", "conversation not found")


async def test_bad_subscribe_requests(http: Http, server: RunningServer, seed: Seed) -> None:
    _, portal = await seed.customer()
    for body, fragment in (
        ({"conversationId": "nope"}, "conversationId: Input should be a valid UUID"),
        ({"conversationId": 7}, "conversationId: UUID input should be a string"),
        ({"includePresence": "maybe"}, "includePresence: Input should be a valid boolean"),
        ({"channels": ["x"]}, "channels: Extra inputs are not permitted"),
        ({"conversation_id": str(uuid.uuid4())}, "conversation_id: Extra inputs are not permitted"),
    ):
        status, reply, _ = await http.call("POST", PATH, portal, json=body)
        assert_error(status, reply, 422, "validation_error", fragment)
    status, reply, _ = await http.call("POST", PATH, portal, data=b"{")
    assert_error(status, reply, 400, "invalid_json", "not valid JSON")
    status, reply, _ = await http.call("POST", PATH, portal, data=b'"x"')
    assert_error(status, reply, 400, "invalid_body", "JSON object")
    for token in (None, "garbage"):
        status, reply, _ = await http.call("POST", PATH, token, json={})
        assert_error(status, reply, 401, "unauthorized")
    # The anon key is for the socket, not for this endpoint.
    status, reply, _ = await http.call("POST", PATH, server.anon_key, json={})
    assert_error(status, reply, 401, "unauthorized", "staff token or a portal token")


async def test_unsubscribe_with_and_without_a_body(http: Http, seed: Seed) -> None:
    customer, portal = await seed.customer()
    _, staff_token = await seed.staff()
    conv = await seed.conversation(customer)
    channels = [f"conversation:{conv}", f"presence:{conv}"]
    for token in (portal, staff_token):
        status, reply, _ = await http.call("DELETE", PATH, token, json={"channels": channels})
        assert list(reply) == ["success", "version", "timestamp", "data"]
        assert assert_ok(status, reply) == {
            "message": "Unsubscribed successfully",
            "channels": channels,
        }
        for kwargs in ({}, {"json": {}}, {"data": b""}):
            status, reply, _ = await http.call("DELETE", PATH, token, **kwargs)  # type: ignore[arg-type]
            assert assert_ok(status, reply) == {
                "message": "Unsubscribed successfully",
                "channels": [],
            }
    for body, code, status_code in (
        ({"channels": "conversation:x"}, "validation_error", 422),
        ({"channels": [1]}, "validation_error", 422),
        ({"channels": ["c"] * 101}, "validation_error", 422),
        ({"topics": []}, "validation_error", 422),
    ):
        status, reply, _ = await http.call("DELETE", PATH, portal, json=body)
        assert_error(
            status, reply, status_code, code, "channels" if "channels" in body else "topics"
        )
    status, reply, _ = await http.call("DELETE", PATH, None)
    assert_error(status, reply, 401, "unauthorized")
