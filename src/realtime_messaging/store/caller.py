"""Run queries on behalf of a caller, so that row-level security decides what they see.

The caller's identity travels as per-transaction settings, Supabase style: the database role
(``anon``, ``authenticated`` or ``service_role``) and the JWT-like claims in
``request.jwt.claims``. The policies read them through the ``rtm.*`` helper functions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

import asyncpg
import orjson

Role = Literal["anon", "authenticated", "service_role"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: a staff user, a customer, the service role, or an anonymous client."""

    role: Role
    user_id: UUID | None = None
    customer_id: UUID | None = None

    def __post_init__(self) -> None:
        if self.user_id is not None and self.customer_id is not None:
            raise ValueError("a caller is a staff user or a customer, not both")
        if (self.user_id or self.customer_id) and self.role != "authenticated":
            raise ValueError("staff users and customers have the authenticated role")

    @classmethod
    def staff(cls, user_id: UUID) -> Caller:
        return cls("authenticated", user_id=user_id)

    @classmethod
    def customer(cls, customer_id: UUID) -> Caller:
        return cls("authenticated", customer_id=customer_id)

    @classmethod
    def service(cls) -> Caller:
        return cls("service_role")

    @classmethod
    def anon(cls) -> Caller:
        return cls("anon")

    def claims(self) -> dict[str, Any]:
        """The claims as the policies read them: ``sub`` for staff, ``customer_id`` for customers."""
        claims: dict[str, Any] = {"role": self.role}
        if self.user_id is not None:
            claims["sub"] = str(self.user_id)
        if self.customer_id is not None:
            claims["sub"] = str(self.customer_id)
            claims["customer_id"] = str(self.customer_id)
        return claims


@asynccontextmanager
async def as_caller(conn: asyncpg.Connection, caller: Caller) -> AsyncIterator[asyncpg.Connection]:
    """A transaction on ``conn`` in which every query runs as ``caller``."""
    async with conn.transaction():
        await conn.execute(
            "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
            caller.role,
            orjson.dumps(caller.claims()).decode(),
        )
        yield conn
