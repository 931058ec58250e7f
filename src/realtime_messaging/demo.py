"""``rtm demo``: a staff user, a customer, a conversation with a first message, and the two
sign-in links, so that a new user has a working conversation in two browser tabs at once.

The tokens travel in the links' fragment (``#token=``), which browsers never send to a server,
so they do not end up in access logs; the pages move them to session storage and drop the
fragment from the address bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from .tokens import hash_portal_token, mint_staff_token, new_portal_token

#: How long the demo's sign-in links stay valid.
DEMO_TOKEN_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Demo:
    user_id: UUID
    customer_id: UUID
    conversation_id: UUID
    staff_token: str
    portal_token: str

    def links(self, base_url: str) -> tuple[str, str]:
        """The staff inbox link and the customer chat link."""
        return (
            f"{base_url}/#token={self.staff_token}",
            f"{base_url}/portal#token={self.portal_token}",
        )


async def create_demo(conn: asyncpg.Connection, secret: str) -> Demo:
    """Create the demo's rows (as the database owner) and mint its tokens, in one transaction."""
    portal = new_portal_token()
    async with conn.transaction():
        user_id = await conn.fetchval(
            "INSERT INTO users (name, email) VALUES ('Alex (support)', 'alex@example.com') "
            "RETURNING id"
        )
        customer_id = await conn.fetchval(
            "INSERT INTO customers (name, email) VALUES ('Sam (customer)', 'sam@example.com') "
            "RETURNING id"
        )
        conversation_id = await conn.fetchval(
            "INSERT INTO conversations (customer_id, subject, assigned_user_id) "
            "VALUES ($1, 'My order has not arrived', $2) RETURNING id",
            customer_id,
            user_id,
        )
        await conn.execute(
            "INSERT INTO portal_tokens (token_hash, customer_id, expires_at) "
            "VALUES ($1, $2, now() + make_interval(secs => $3))",
            hash_portal_token(portal),
            customer_id,
            float(DEMO_TOKEN_SECONDS),
        )
        await conn.execute(
            "INSERT INTO customer_messages (conversation_id, sender_type, sender_id, content) "
            "VALUES ($1, 'customer', $2, 'Hello! My order has not arrived yet. Can you help?')",
            conversation_id,
            customer_id,
        )
    return Demo(
        user_id,
        customer_id,
        conversation_id,
        mint_staff_token(secret, user_id, ttl_seconds=DEMO_TOKEN_SECONDS),
        portal,
    )
