"""Service-role endpoints: staff users, customers, portal tokens and staff tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import Field

from ...tokens import hash_portal_token, mint_staff_token, new_portal_token
from .framework import (
    TIME_SCHEMA,
    UUID_SCHEMA,
    Api,
    Context,
    Model,
    envelope,
    json_object,
    not_found,
)
from .messaging import _decode_cursor, _page

MAX_TOKEN_LIFETIME = 365 * 24 * 3600


class NewPerson(Model):
    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320)


class TokenRequest(Model):
    expires_in_seconds: int = Field(default=30 * 24 * 3600, ge=60, le=MAX_TOKEN_LIFETIME)


class StaffTokenRequest(Model):
    expires_in_seconds: int = Field(default=3600, ge=60, le=MAX_TOKEN_LIFETIME)


class PeopleQuery(Model):
    limit: int = Field(default=50, ge=1, le=100)
    #: The ``nextCursor`` of the previous page.
    before: str | None = None


async def create_portal_token(
    db: asyncpg.Pool | asyncpg.Connection, customer_id: UUID, ttl_seconds: int
) -> tuple[UUID, str, datetime] | None:
    """A new portal token for the customer (its id, the token, its expiry); only its hash is
    stored. None when there is no such customer."""
    token = new_portal_token()
    expires = datetime.now(UTC) + timedelta(seconds=ttl_seconds)
    token_id = await db.fetchval(
        "INSERT INTO public.portal_tokens (token_hash, customer_id, expires_at) "
        "SELECT $1, id, $3 FROM public.customers WHERE id = $2 RETURNING id",
        hash_portal_token(token),
        customer_id,
        expires,
    )
    return None if token_id is None else (token_id, token, expires)


def _person(row: Any) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "email": row["email"],
        "createdAt": row["created_at"].isoformat(),
    }


_PERSON = json_object(
    id=UUID_SCHEMA,
    name={"type": "string"},
    email={"type": ["string", "null"]},
    createdAt=TIME_SCHEMA,
)


def _register_create_person(api: Api, table: str, path: str, summary: str) -> None:
    async def create(ctx: Context, body: NewPerson) -> dict[str, Any]:
        row = await ctx.pool.fetchrow(
            f"INSERT INTO public.{table} (name, email) VALUES ($1, $2) RETURNING *",
            body.name,
            body.email,
        )
        return _person(row)

    # The operation id in the document comes from the handler's name.
    create.__name__ = f"create_{table.removesuffix('s')}"
    api.route(
        "POST",
        path,
        summary=summary,
        auth="service",
        body=NewPerson,
        response=envelope(_PERSON),
        status=201,
        tags=("admin",),
    )(create)

    async def list_people(ctx: Context, query: PeopleQuery) -> dict[str, Any]:
        args: list[Any] = [query.limit + 1]
        where = ""
        if query.before:
            created, row_id = _decode_cursor(query.before)
            where = "WHERE (created_at, id) < ($2, $3)"
            args += [created, row_id]
        rows = await ctx.pool.fetch(
            f"SELECT id, name, email, created_at FROM public.{table} {where} "
            "ORDER BY created_at DESC, id DESC LIMIT $1",
            *args,
        )
        page, cursor = _page(rows, query.limit)
        return {table: [_person(r) for r in page], "nextCursor": cursor}

    list_people.__name__ = f"list_{table}"
    api.route(
        "GET",
        path,
        summary=f"List {table}, newest first, by cursor",
        auth="service",
        query=PeopleQuery,
        response=envelope(
            json_object(
                **{table: {"type": "array", "items": _PERSON}},
                nextCursor={"type": ["string", "null"]},
            )
        ),
        tags=("admin",),
    )(list_people)


def register(api: Api, *, secret: str) -> None:
    for table, path, summary in (
        ("users", "/api/admin/users", "Create a staff user"),
        ("customers", "/api/admin/customers", "Create a customer"),
    ):
        _register_create_person(api, table, path, summary)

    @api.route(
        "POST",
        "/api/admin/customers/{customer_id}/portal-tokens",
        summary="Issue a portal token (shown once; only its hash is stored)",
        auth="service",
        body=TokenRequest,
        response=envelope(
            json_object(
                id=UUID_SCHEMA,
                customerId=UUID_SCHEMA,
                token={"type": "string"},
                expiresAt=TIME_SCHEMA,
            )
        ),
        status=201,
        tags=("admin",),
    )
    async def issue_portal_token(ctx: Context, body: TokenRequest) -> dict[str, Any]:
        customer_id = ctx.uuid_param("customer_id")
        issued = await create_portal_token(ctx.pool, customer_id, body.expires_in_seconds)
        if issued is None:
            raise not_found("customer not found")
        token_id, token, expires = issued
        return {
            "id": str(token_id),
            "customerId": str(customer_id),
            "token": token,
            "expiresAt": expires.isoformat(),
        }

    @api.route(
        "DELETE",
        "/api/admin/portal-tokens/{token_id}",
        summary="Revoke a portal token (live connections using it are closed within seconds)",
        auth="service",
        response=envelope(json_object(id=UUID_SCHEMA, revokedAt=TIME_SCHEMA)),
        tags=("admin",),
    )
    async def revoke_portal_token(ctx: Context, _: None) -> dict[str, Any]:
        token_id = ctx.uuid_param("token_id")
        revoked = await ctx.pool.fetchval(
            "UPDATE public.portal_tokens SET revoked_at = coalesce(revoked_at, now()) "
            "WHERE id = $1 RETURNING revoked_at",
            token_id,
        )
        if revoked is None:
            raise not_found("portal token not found")
        return {"id": str(token_id), "revokedAt": revoked.isoformat()}

    @api.route(
        "POST",
        "/api/admin/users/{user_id}/tokens",
        summary="Mint a staff JWT",
        auth="service",
        body=StaffTokenRequest,
        response=envelope(
            json_object(userId=UUID_SCHEMA, token={"type": "string"}, expiresAt=TIME_SCHEMA)
        ),
        status=201,
        tags=("admin",),
    )
    async def mint_token(ctx: Context, body: StaffTokenRequest) -> dict[str, Any]:
        user_id = ctx.uuid_param("user_id")
        exists = await ctx.pool.fetchval("SELECT 1 FROM public.users WHERE id = $1", user_id)
        if exists is None:
            raise not_found("user not found")
        token = mint_staff_token(secret, user_id, ttl_seconds=body.expires_in_seconds)
        expires = datetime.now(UTC) + timedelta(seconds=body.expires_in_seconds)
        return {"userId": str(user_id), "token": token, "expiresAt": expires.isoformat()}
