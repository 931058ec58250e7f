"""Turning tokens into identities: API keys and staff JWTs (HS256) and customers' portal tokens.

Errors carry the two shapes the protocol needs: the message of an HTTP 401 before the upgrade
(``{"error": message}``) and the ``"<Code>: <message>"`` reason of a join error.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Generic, TypeVar
from uuid import UUID

import asyncpg
import jwt

from ..domain.identity import Identity, Kind
from ..tokens import hash_portal_token, is_portal_token
from .batching import Coalesced


class AuthError(Exception):
    """A token that proves nothing; ``status`` is the HTTP status before an upgrade."""

    status = 401

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.message}"


class AuthUnavailable(AuthError):
    """The database needed to check a token did not answer; try again later."""

    status = 503

    def __init__(self) -> None:
        super().__init__("UnableToConnectToProject", "Realtime cannot reach its database")


K = TypeVar("K")
V = TypeVar("V")


def expired_message(exp: float, now: float) -> str:
    return f"Token has expired {max(0, int(now - exp))} seconds ago"


class _LRU(Generic[K, V]):
    """A small bounded cache."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> tuple[bool, V | None]:
        if key in self._data:
            self._data.move_to_end(key)
            return True, self._data[key]
        return False, None

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._size:
            self._data.popitem(last=False)


def _from_claims(claims: dict[str, object], exp: float) -> Identity | None:
    """The identity the claims alone decide (the service role, anon, a customer), or None."""
    role = claims.get("role")
    if role == "service_role":
        return Identity(Kind.SERVICE, expires_at=exp)
    if role == "anon":
        return Identity(Kind.ANON, expires_at=exp)
    customer = _as_uuid(claims.get("customer_id"))
    if customer is not None:
        return Identity(Kind.CUSTOMER, customer_id=customer, expires_at=exp)
    return None


class Authenticator:
    """Verifies tokens against the JWT secret and the database (portal tokens, staff users)."""

    def __init__(self, secret: str, pool: asyncpg.Pool) -> None:
        self._secret = secret
        self._pool = pool
        # Conversation owners never change, so entries never go stale.
        self._owners: _LRU[UUID, UUID] = _LRU(100_000)
        # Verified claims by token: thousands of sockets connect with the same anon key, and
        # verifying its signature once is enough (expiry is still checked every time). With
        # them, the identity when the claims alone decide it (not a staff user's, which the
        # users table does): those sockets then share one.
        self._verified: _LRU[str, tuple[dict[str, object], float, Identity | None]] = _LRU(10_000)
        self._portal_rows: Coalesced[str, asyncpg.Record] = Coalesced(self._fetch_portal_rows)
        self._owner_rows: Coalesced[UUID, UUID] = Coalesced(self._fetch_owners)
        # Batched like the others: a staff reconnect storm asks once per turn of the loop, and
        # an upgrade or a join never touches the pool itself (server/eager.py).
        self._staff_rows: Coalesced[UUID, bool] = Coalesced(self._fetch_staff)

    async def identify(self, token: str | None, *, now: float | None = None) -> Identity:
        """The identity a token proves, or :class:`AuthError`."""
        now = time.time() if now is None else now
        if not token:
            raise AuthError("Unauthorized", "API key is missing")
        try:
            if is_portal_token(token):
                return await self._portal(token, now)
            claims, exp, known = self._decode(token, now)
            return known or await self._from_users(claims, exp)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise AuthUnavailable() from exc

    async def _from_users(self, claims: dict[str, object], exp: float) -> Identity:
        """The identity of claims that name a user: staff if the users table has them."""
        sub = _as_uuid(claims.get("sub"))
        if claims.get("role") == "authenticated" and sub is not None and await self._is_staff(sub):
            return Identity(Kind.STAFF, user_id=sub, expires_at=exp)
        return Identity(Kind.AUTHENTICATED, expires_at=exp)

    def _decode(self, token: str, now: float) -> tuple[dict[str, object], float, Identity | None]:
        hit, verified = self._verified.get(token)
        if hit and verified is not None:
            if verified[1] <= now:
                raise AuthError("InvalidJWTToken", expired_message(verified[1], now))
            return verified
        try:
            claims: dict[str, object] = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256", "HS384", "HS512"],
                options={"require": ["exp", "role"], "verify_exp": False, "verify_aud": False},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(
                "InvalidJWTToken", "Fields `role` and `exp` are required in JWT"
            ) from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError("JwtSignatureError", "Failed to validate JWT signature") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError("MalformedJWT", "The token provided is not a valid JWT") from exc
        raw_exp = claims["exp"]
        if not isinstance(raw_exp, int | float) or isinstance(raw_exp, bool):
            raise AuthError("MalformedJWT", "The token provided is not a valid JWT")
        exp = float(raw_exp)
        if exp <= now:
            raise AuthError("InvalidJWTToken", expired_message(exp, now))
        verified = (claims, exp, _from_claims(claims, exp))
        self._verified.put(token, verified)
        return verified

    async def _portal(self, token: str, now: float) -> Identity:
        digest = hash_portal_token(token)
        row = await self._portal_rows.get(digest)
        if row is None:
            raise AuthError("InvalidJWTToken", "The portal token is not valid")
        if row["revoked"]:
            raise AuthError("InvalidJWTToken", "Token has been revoked")
        exp = row["exp"]
        if exp is not None and exp <= now:
            raise AuthError("InvalidJWTToken", expired_message(exp, now))
        return Identity(
            Kind.CUSTOMER, customer_id=row["customer_id"], expires_at=exp, token_hash=digest
        )

    async def _fetch_portal_rows(self, digests: list[str]) -> dict[str, asyncpg.Record]:
        rows = await self._pool.fetch(
            "SELECT token_hash, customer_id, extract(epoch FROM expires_at)::float8 AS exp, "
            "revoked_at IS NOT NULL AS revoked FROM portal_tokens "
            "WHERE token_hash = ANY($1::text[])",
            digests,
        )
        return {r["token_hash"]: r for r in rows}

    async def _fetch_owners(self, conversations: list[UUID]) -> dict[UUID, UUID]:
        # text[]: asyncpg would ask the database about uuid[] on each fresh pool connection.
        rows = await self._pool.fetch(
            "SELECT id, customer_id FROM conversations WHERE id = ANY($1::text[]::uuid[])",
            [str(c) for c in conversations],
        )
        return {r["id"]: r["customer_id"] for r in rows}

    async def _is_staff(self, user_id: UUID) -> bool:
        return await self._staff_rows.get(user_id) is not None

    async def _fetch_staff(self, users: list[UUID]) -> dict[UUID, bool]:
        rows = await self._pool.fetch(
            "SELECT id FROM users WHERE id = ANY($1::text[]::uuid[])", [str(u) for u in users]
        )
        return {r["id"]: True for r in rows}

    async def conversation_owner(self, conversation_id: UUID) -> UUID | None:
        """The customer owning a conversation (cached: it never changes), or None."""
        hit, owner = self._owners.get(conversation_id)
        if hit:
            return owner
        try:
            owner = await self._owner_rows.get(conversation_id)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise AuthUnavailable() from exc
        if owner is not None:  # a conversation created later must not stay cached as absent
            self._owners.put(conversation_id, owner)
        return owner

    async def portal_tokens_ended_since(self, since: datetime | None) -> tuple[set[str], datetime]:
        """Hashes of portal tokens revoked or expired after ``since`` (on the database's clock),
        and the database's time now, for the next call.

        The window reaches 30 s further back: a revocation committed late carries the earlier
        time its transaction started.
        """
        rows = await self._pool.fetch(
            "SELECT token_hash, now() AS now FROM portal_tokens "
            "WHERE revoked_at > $1::timestamptz - interval '30 seconds' "
            "OR (expires_at > $1::timestamptz - interval '30 seconds' AND expires_at <= now()) "
            "UNION ALL SELECT NULL, now()",
            since or datetime(1970, 1, 1, tzinfo=UTC),
        )
        return {r["token_hash"] for r in rows if r["token_hash"] is not None}, rows[0]["now"]

    async def invalid_portal_tokens(self, hashes: set[str]) -> set[str]:
        """Which of these portal-token hashes are revoked, expired or gone now."""
        if not hashes:
            return set()
        rows = await self._pool.fetch(
            "SELECT token_hash FROM portal_tokens WHERE token_hash = ANY($1::text[]) "
            "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
            list(hashes),
        )
        return hashes - {r["token_hash"] for r in rows}


def _as_uuid(value: object) -> UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return UUID(value)
    except ValueError:
        return None
