"""Schemathesis against the served OpenAPI document: no 5xx, no response off its schema.

The server runs as a real `rtm serve` process (schemathesis's runner is synchronous and would
block an in-process server's event loop), on an embedded database of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp

RTM = [sys.executable, "-m", "realtime_messaging"]
SCHEMATHESIS = [sys.executable, "-m", "schemathesis.cli"]


async def _post(session: aiohttp.ClientSession, url: str, token: str, body: object) -> dict:  # type: ignore[type-arg]
    async with session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 201, await r.text()
        data: dict = (await r.json())["data"]  # type: ignore[type-arg]
        return data


async def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTM_")}
    env.update(RTM_DATA_DIR=str(tmp_path), RTM_PORT="0", RTM_RATE_REQUESTS="1000000/minute")
    server = await asyncio.create_subprocess_exec(
        *RTM, "serve", env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        banner: dict[str, str] = {}
        async with asyncio.timeout(60):
            while "service_role key" not in banner:
                line = (await server.stdout.readline()).decode()  # type: ignore[union-attr]
                assert line, "rtm serve exited"
                key, _, value = line.strip().partition(": ")
                banner[key] = value
        base, service = banner["API URL"], banner["service_role key"]
        async with aiohttp.ClientSession() as session:
            user = await _post(session, f"{base}/api/admin/users", service, {"name": "Agent"})
            staff = await _post(session, f"{base}/api/admin/users/{user['id']}/tokens", service, {})
            customer = await _post(session, f"{base}/api/admin/customers", service, {"name": "C"})
            portal = await _post(
                session, f"{base}/api/admin/customers/{customer['id']}/portal-tokens", service, {}
            )
        for token in (staff["token"], portal["token"], service):
            fuzz = await asyncio.create_subprocess_exec(
                *SCHEMATHESIS,
                "run",
                f"{base}/openapi.json",
                "--checks",
                "not_a_server_error,response_schema_conformance",
                "--max-examples",
                "8",
                "--header",
                f"Authorization: Bearer {token}",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},
            )
            out, _ = await asyncio.wait_for(fuzz.communicate(), 240)
            report = out.decode()
            assert fuzz.returncode == 0, report[-4000:]
            # Exit status 0: no check failed (warnings, such as 403s on admin routes for a
            # staff token, do not count).
            assert re.search(r"\d+ generated, \d+ passed", report), report[-2000:]
    finally:
        server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(server.wait(), 30)


def test_openapi_lists_every_api_route() -> None:
    from realtime_messaging.server.api import admin, messaging, rpc
    from realtime_messaging.server.api.framework import Api, openapi

    api = Api(authenticator=None, pool=None, limiter=None)  # type: ignore[arg-type]
    messaging.register(api, anon_key="k", max_message_bytes=1)
    admin.register(api, secret="s")
    rpc.register(api)
    spec = openapi(api, title="t", version="v")
    assert spec["openapi"] == "3.1.0"
    declared = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert declared == {(r.method, r.path) for r in api.routes}
    assert len(declared) >= 20
    json.dumps(spec)
