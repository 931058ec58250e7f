"""Schemathesis, through its Python API, against the served OpenAPI document: no 5xx, and no
response that breaks the schema the document declares for it.

The server runs in this event loop on a database of its own; schemathesis's calls are
synchronous, so the generation runs in a worker thread. Every operation is fuzzed with schema-
conforming and schema-violating data (positive and negative modes), both with generated path
parameters and with the ids of real rows, so that the requests reach the database, not only the
validation. Hypothesis is derandomised: the same examples every run.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from realtime_messaging.tokens import hash_portal_token
from tests.conftest import Seed, fresh_database, running_server

from .conftest import insert_message

MAX_EXAMPLES = 30
UNLIMITED = {
    "rate_requests": "10000000/minute",
    "rate_typing": "10000000/minute",
    "rate_presence": "10000000/minute",
    "rate_read_receipts": "10000000/minute",
}
RPC_FUNCTIONS = (
    "mark_message_as_read",
    "update_typing_indicator",
    "update_user_presence",
    "get_unread_message_count",
    "cleanup_expired_typing_indicators",
)


def fuzz(base_url: str, token: str, known: dict[str, str]) -> tuple[int, list[str]]:
    """Run every operation; return how many cases ran and one report per failing operation."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=10)
    headers = {"Authorization": f"Bearer {token}"}
    checks = [not_a_server_error, response_schema_conformance]
    cases = 0
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        # Targets: generated path parameters; the ids of real rows; each RPC function by name.
        targets: list[tuple[str, dict[str, str] | None]] = [(operation.label, None)]
        real = {n: known[n] for n in known if "{" + n + "}" in operation.path}
        if real:
            targets.append((f"{operation.label} with real ids", real))
        if "{function}" in operation.path:
            targets += [(f"POST /rest/v1/rpc/{name}", {"function": name}) for name in RPC_FUNCTIONS]
        for label, path_parameters in targets:
            strategy = st.one_of(
                [
                    operation.as_strategy(mode, path_parameters=path_parameters)
                    for mode in GenerationMode
                ]
            )

            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: Any) -> None:
                nonlocal cases
                cases += 1
                case.call_and_validate(
                    base_url=base_url, headers=headers, checks=checks, timeout=10
                )

            try:
                run()
            except (Exception, BaseExceptionGroup) as exc:  # FailureGroup: a BaseExceptionGroup
                failures.append(f"{label}:\n{str(exc)[:1500]}")
    return cases, failures


async def _world(pool: asyncpg.Pool) -> tuple[str, str, dict[str, str]]:
    seed = Seed(pool)
    customer, portal = await seed.customer()
    user, staff = await seed.staff()
    conversation = await seed.conversation(customer)
    message = await insert_message(pool, conversation, "staff", user, "hello")
    spare = "pt_spare_" + uuid.uuid4().hex
    token_id = await pool.fetchval(
        "INSERT INTO portal_tokens (token_hash, customer_id, expires_at) "
        "VALUES ($1, $2, now() + interval '1 hour') RETURNING id",
        hash_portal_token(spare),
        customer,
    )
    known = {
        "conversation_id": str(conversation),
        "message_id": str(message),
        "customer_id": str(customer),
        "user_id": str(user),
        "token_id": str(token_id),
    }
    return staff, portal, known


async def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(admin_url: str) -> None:
    async with fresh_database(admin_url) as url, running_server(url, **UNLIMITED) as srv:
        async with asyncpg.create_pool(url, min_size=1, max_size=2) as pool:
            staff, portal, known = await _world(pool)
        report: list[str] = []
        for who, token in (("staff token", staff), ("portal token", portal)):
            cases, failures = await asyncio.wait_for(
                asyncio.to_thread(fuzz, srv.http_url, token, known), 300
            )
            assert cases > 20 * 10, cases  # every operation ran, most of them many times
            report += [f"[{who}] {failure}" for failure in failures]
    assert not report, "\n\n".join(report)
