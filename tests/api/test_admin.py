"""The service-role endpoints: who may call them, and what the users, customers and tokens they
create can then do."""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import asyncpg
import jwt

from realtime_messaging.tokens import hash_portal_token
from tests.conftest import RunningServer, Seed

from .conftest import UNKNOWN, Http, assert_error, assert_ok, count

ADMIN_ROUTES = [
    ("POST", "/api/admin/users", {"name": "x"}),
    ("POST", "/api/admin/customers", {"name": "x"}),
    ("POST", f"/api/admin/customers/{UNKNOWN}/portal-tokens", {}),
    ("DELETE", f"/api/admin/portal-tokens/{UNKNOWN}", None),
    ("POST", f"/api/admin/users/{UNKNOWN}/tokens", {}),
    ("GET", "/api/admin/users", None),
    ("GET", "/api/admin/customers", None),
]


async def test_only_the_service_key_reaches_the_admin_endpoints(
    http: Http, server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    _, staff_token = await seed.staff()
    _, portal = await seed.customer()
    users, customers = await count(pool, "users"), await count(pool, "customers")
    for method, path, body in ADMIN_ROUTES:
        # A valid key of the wrong role: forbidden; no key or a bad one: unauthorized.
        for token in (staff_token, portal, server.anon_key):
            status, reply, _ = await http.call(method, path, token, json=body)
            assert_error(status, reply, 403, "forbidden", "service_role")
        status, reply, _ = await http.call(method, path, None, json=body)
        assert_error(status, reply, 401, "unauthorized", "Bearer")
        status, reply, _ = await http.call(method, path, "not-a-token", json=body)
        assert_error(status, reply, 401, "unauthorized")
    assert (await count(pool, "users"), await count(pool, "customers")) == (users, customers)


async def test_create_users_and_customers(
    http: Http, server: RunningServer, pool: asyncpg.Pool
) -> None:
    for path, table in (("/api/admin/users", "users"), ("/api/admin/customers", "customers")):
        status, reply, _ = await http.call(
            "POST", path, server.service_key, json={"name": "Ada", "email": "ada@example.com"}
        )
        data = assert_ok(status, reply, 201)
        assert set(data) == {"id", "name", "email", "createdAt"}
        assert (data["name"], data["email"]) == ("Ada", "ada@example.com")
        datetime.fromisoformat(data["createdAt"])
        row = await pool.fetchrow(
            f"SELECT name, email FROM {table} WHERE id = $1", uuid.UUID(data["id"])
        )
        assert tuple(row) == ("Ada", "ada@example.com")

        status, reply, _ = await http.call("POST", path, server.service_key, json={"name": "Bo"})
        assert assert_ok(status, reply, 201)["email"] is None

        before = await count(pool, table)
        for body, fragment in (
            ({}, "name: Field required"),
            ({"name": ""}, "name: String should have at least 1 character"),
            ({"name": 5}, "name: Input should be a valid string"),
            ({"name": "x", "role": "admin"}, "role: Extra inputs are not permitted"),
            ({"name": "x" * 201}, "name: String should have at most 200 characters"),
        ):
            status, reply, _ = await http.call("POST", path, server.service_key, json=body)
            assert_error(status, reply, 422, "validation_error", fragment)
        assert await count(pool, table) == before


async def test_portal_token_is_shown_once_works_and_is_revoked(
    http: Http, server: RunningServer, pool: asyncpg.Pool
) -> None:
    service = server.service_key
    status, reply, _ = await http.call("POST", "/api/admin/customers", service, json={"name": "C"})
    customer = assert_ok(status, reply, 201)["id"]
    status, reply, _ = await http.call(
        "POST",
        f"/api/admin/customers/{customer}/portal-tokens",
        service,
        json={"expiresInSeconds": 600},
    )
    issued = assert_ok(status, reply, 201)
    assert set(issued) == {"id", "customerId", "token", "expiresAt"}
    assert issued["customerId"] == customer and issued["token"].startswith("pt_")
    assert abs(datetime.fromisoformat(issued["expiresAt"]).timestamp() - time.time() - 600) < 30
    token = issued["token"]

    # Only the hash is stored: the token itself is nowhere in its row.
    row = await pool.fetchrow("SELECT * FROM portal_tokens WHERE id = $1", uuid.UUID(issued["id"]))
    assert row["token_hash"] == hash_portal_token(token)
    assert token not in {str(v) for v in row.values()}

    # It works as a Bearer token, as that customer.
    status, reply, _ = await http.call("POST", "/api/messages/realtime/subscribe", token, json={})
    assert assert_ok(status, reply)["filters"]["customerId"] == customer
    status, reply, _ = await http.call("POST", "/api/conversations", token, json={})
    assert assert_ok(status, reply, 201)["customerId"] == customer

    # A second token is a different one; revoking the first leaves the second working.
    status, reply, _ = await http.call(
        "POST", f"/api/admin/customers/{customer}/portal-tokens", service, json={}
    )
    second = assert_ok(status, reply, 201)
    assert second["token"] != token and second["id"] != issued["id"]
    default_ttl = datetime.fromisoformat(second["expiresAt"]).timestamp() - time.time()
    assert abs(default_ttl - 30 * 24 * 3600) < 60

    status, reply, _ = await http.call(
        "DELETE", f"/api/admin/portal-tokens/{issued['id']}", service
    )
    revoked = assert_ok(status, reply)
    assert revoked["id"] == issued["id"] and datetime.fromisoformat(revoked["revokedAt"])
    # Revoking again is idempotent: the first revocation time stays.
    status, reply, _ = await http.call(
        "DELETE", f"/api/admin/portal-tokens/{issued['id']}", service
    )
    assert assert_ok(status, reply) == revoked

    status, reply, _ = await http.call("GET", "/api/conversations", token)
    assert_error(status, reply, 401, "unauthorized", "revoked")
    status, reply, _ = await http.call("POST", "/api/messages/realtime/subscribe", token, json={})
    assert_error(status, reply, 401, "unauthorized", "revoked")
    status, reply, _ = await http.call("GET", "/api/conversations", second["token"])
    assert_ok(status, reply)

    # Unknown ids and bad input.
    status, reply, _ = await http.call("DELETE", f"/api/admin/portal-tokens/{UNKNOWN}", service)
    assert_error(status, reply, 404, "not_found", "portal token not found")
    status, reply, _ = await http.call("DELETE", "/api/admin/portal-tokens/nope", service)
    assert_error(status, reply, 422, "validation_error", "token_id: not a UUID")
    before = await count(pool, "portal_tokens")
    status, reply, _ = await http.call(
        "POST", f"/api/admin/customers/{UNKNOWN}/portal-tokens", service, json={}
    )
    assert_error(status, reply, 404, "not_found", "customer not found")
    status, reply, _ = await http.call(
        "POST", "/api/admin/customers/nope/portal-tokens", service, json={}
    )
    assert_error(status, reply, 422, "validation_error", "customer_id: not a UUID")
    for body, fragment in (
        ({"expiresInSeconds": 59}, "expiresInSeconds: Input should be greater than or equal to 60"),
        ({"expiresInSeconds": 365 * 24 * 3600 + 1}, "expiresInSeconds: Input should be less"),
        ({"expiresInSeconds": "soon"}, "expiresInSeconds: Input should be a valid integer"),
        ({"ttl": 60}, "ttl: Extra inputs are not permitted"),
    ):
        status, reply, _ = await http.call(
            "POST", f"/api/admin/customers/{customer}/portal-tokens", service, json=body
        )
        assert_error(status, reply, 422, "validation_error", fragment)
    assert await count(pool, "portal_tokens") == before


async def test_revoking_through_the_seed_also_refuses_the_token(http: Http, seed: Seed) -> None:
    _, token = await seed.customer()
    assert (await http.call("GET", "/api/conversations", token))[0] == 200
    await seed.revoke(token)
    status, reply, _ = await http.call("GET", "/api/conversations", token)
    assert_error(status, reply, 401, "unauthorized", "revoked")


async def test_minted_staff_token_works_as_bearer(
    http: Http, server: RunningServer, seed: Seed
) -> None:
    service = server.service_key
    status, reply, _ = await http.call("POST", "/api/admin/users", service, json={"name": "Agent"})
    user = assert_ok(status, reply, 201)["id"]
    status, reply, _ = await http.call(
        "POST", f"/api/admin/users/{user}/tokens", service, json={"expiresInSeconds": 120}
    )
    minted = assert_ok(status, reply, 201)
    assert set(minted) == {"userId", "token", "expiresAt"} and minted["userId"] == user
    claims = jwt.decode(minted["token"], server.secret, algorithms=["HS256"])
    assert claims["sub"] == user and claims["role"] == "authenticated"
    assert abs(claims["exp"] - time.time() - 120) < 30
    assert abs(datetime.fromisoformat(minted["expiresAt"]).timestamp() - claims["exp"]) < 5

    status, reply, _ = await http.call("POST", "/api/messages/realtime/subscribe", minted["token"])
    data = assert_ok(status, reply)
    assert data["filters"] == {"userId": user, "customerId": None, "conversationId": None}
    assert data["channels"] == [f"staff:{user}:messages"]
    # Staff see every conversation.
    customer, _ = await seed.customer()
    conv = await seed.conversation(customer)
    status, reply, _ = await http.call("GET", f"/api/conversations/{conv}", minted["token"])
    assert assert_ok(status, reply)["id"] == str(conv)

    status, reply, _ = await http.call(
        "POST", f"/api/admin/users/{UNKNOWN}/tokens", service, json={}
    )
    assert_error(status, reply, 404, "not_found", "user not found")
    status, reply, _ = await http.call("POST", "/api/admin/users/x/tokens", service, json={})
    assert_error(status, reply, 422, "validation_error", "user_id: not a UUID")
    # A customer id is not a user id.
    status, reply, _ = await http.call(
        "POST", f"/api/admin/users/{customer}/tokens", service, json={}
    )
    assert_error(status, reply, 404, "not_found", "user not found")
    status, reply, _ = await http.call(
        "POST", f"/api/admin/users/{user}/tokens", service, json={"expiresInSeconds": 10}
    )
    assert_error(status, reply, 422, "validation_error", "expiresInSeconds")


async def test_staff_token_of_a_deleted_user_no_longer_works(
    http: Http, seed: Seed, pool: asyncpg.Pool
) -> None:
    user, token = await seed.staff()
    assert (await http.call("GET", "/api/conversations", token))[0] == 200
    await pool.execute("DELETE FROM users WHERE id = $1", user)
    status, reply, _ = await http.call("GET", "/api/conversations", token)
    assert_error(status, reply, 401, "unauthorized")


async def test_list_users_and_customers_newest_first_by_cursor(
    http: Http, server: RunningServer, pool: asyncpg.Pool
) -> None:
    for path, table in (("/api/admin/users", "users"), ("/api/admin/customers", "customers")):
        made = []
        for i in range(5):
            status, reply, _ = await http.call(
                "POST", path, server.service_key, json={"name": f"P{i}"}
            )
            made.append(assert_ok(status, reply, 201))
        seen: list[dict[str, object]] = []
        cursor: str | None = None
        while True:
            params = {"limit": "2", **({"before": cursor} if cursor else {})}
            status, reply, _ = await http.call("GET", path, server.service_key, params=params)
            data = assert_ok(status, reply)
            assert set(data) == {table, "nextCursor"}
            assert len(data[table]) <= 2
            seen += data[table]
            cursor = data["nextCursor"]
            if cursor is None:
                break
        assert seen[:5] == made[::-1]  # newest first, exactly what was created
        ids = [p["id"] for p in seen]
        assert len(ids) == len(set(ids)) == await count(pool, table)
        for params, fragment in (
            ({"limit": "101"}, "limit"),
            ({"limit": "0"}, "limit"),
            ({"before": "bm90IGEgY3Vyc29y"}, "cursor"),
        ):
            status, reply, _ = await http.call("GET", path, server.service_key, params=params)
            assert_error(status, reply, 422, "validation_error", fragment)
