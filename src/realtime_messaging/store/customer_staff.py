"""The staff each customer may see: assigned to one of their conversations, or who wrote in
one (``rtm.staff_of_customer``, the rule row security applies to ``users`` and
``user_presence``). Read when a customer's channel asks for staff presence rows."""

from __future__ import annotations

import asyncpg

# The ids pass as text (asyncpg asks the catalog about a uuid[] codec on each new connection).
_STAFF = """
SELECT r.who, s.id::text AS staff
FROM unnest($1::text[]) AS r(who)
LEFT JOIN LATERAL rtm.staff_of_customer(r.who::uuid) AS s(id) ON true
"""


async def staff_of_customers(
    conn: asyncpg.Connection, customers: list[str]
) -> dict[str, frozenset[str]]:
    """Each customer's staff ids (canonical text), in one query; none for an unknown customer."""
    found: dict[str, set[str]] = {customer: set() for customer in customers}
    for row in await conn.fetch(_STAFF, customers):
        if row["staff"] is not None:
            found[row["who"]].add(row["staff"])
    return {customer: frozenset(ids) for customer, ids in found.items()}
