"""Portal tokens for customers and JWTs for staff (DESIGN section 3).

Portal tokens are opaque random strings prefixed ``pt_``; only their SHA-256 is stored, so a
leaked database does not leak usable tokens. Staff tokens are HS256 JWTs with ``role`` =
``authenticated`` and ``sub`` = the ``users.id``.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from uuid import UUID

import jwt

from .keys import ISSUER

PORTAL_TOKEN_PREFIX = "pt_"


def new_portal_token() -> str:
    return PORTAL_TOKEN_PREFIX + secrets.token_urlsafe(32)


def is_portal_token(token: str) -> bool:
    return token.startswith(PORTAL_TOKEN_PREFIX)


def hash_portal_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def mint_staff_token(
    secret: str, user_id: UUID, *, ttl_seconds: int = 3600, now: float | None = None
) -> str:
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": ISSUER,
        "sub": str(user_id),
        "role": "authenticated",
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    return jwt.encode(claims, secret, algorithm="HS256")
