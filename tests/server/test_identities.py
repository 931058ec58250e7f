"""Verified tokens are remembered, identities only where the token alone decides them: the
sockets of one API key share one identity, and a staff token is checked against the users
table at every connect (a user removed from it connects as a plain authenticated caller)."""

from __future__ import annotations

import asyncpg

from realtime_messaging.domain.identity import Kind
from realtime_messaging.keys import anon_key, service_role_key
from realtime_messaging.server.auth import Authenticator
from tests.conftest import TEST_SECRET, Seed


async def test_one_api_key_gives_one_shared_identity(pool: asyncpg.Pool) -> None:
    auth = Authenticator(TEST_SECRET, pool)
    for key, kind in (
        (anon_key(TEST_SECRET), Kind.ANON),
        (service_role_key(TEST_SECRET), Kind.SERVICE),
    ):
        first = await auth.identify(key)
        again = await auth.identify(key)
        assert first.kind is kind and again is first


async def test_a_staff_token_is_checked_against_the_users_table_every_time(
    pool: asyncpg.Pool, seed: Seed
) -> None:
    auth = Authenticator(TEST_SECRET, pool)
    staff, _ = await seed.staff()
    token = seed.staff_token(staff)
    assert (await auth.identify(token)).kind is Kind.STAFF
    await pool.execute("DELETE FROM users WHERE id = $1", staff)
    after = await auth.identify(token)
    assert after.kind is Kind.AUTHENTICATED and after.user_id is None
