"""The ``rtm`` command as a user runs it: subprocesses on a data directory of their own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import jwt

from realtime_messaging.tokens import hash_portal_token
from tests.conftest import RunningServer, Seed, with_database

RTM = [sys.executable, "-m", "realtime_messaging"]


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTM_")}
    env["RTM_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def test_keys_are_stable_and_signed_with_the_generated_secret(tmp_path: Path) -> None:
    first = subprocess.run(
        [*RTM, "keys", "--json"], env=_env(tmp_path), capture_output=True, text=True, check=True
    )
    second = subprocess.run(
        [*RTM, "keys", "--json"], env=_env(tmp_path), capture_output=True, text=True, check=True
    )
    keys = json.loads(first.stdout)
    assert keys == json.loads(second.stdout)
    secret = (tmp_path / "jwt_secret").read_text().strip()
    assert jwt.decode(keys["anon_key"], secret, algorithms=["HS256"])["role"] == "anon"
    assert (
        jwt.decode(keys["service_role_key"], secret, algorithms=["HS256"])["role"] == "service_role"
    )


def test_keys_follow_rtm_jwt_secret(tmp_path: Path) -> None:
    secret = "s" * 48
    out = subprocess.run(
        [*RTM, "keys", "--json"],
        env=_env(tmp_path, RTM_JWT_SECRET=secret),
        capture_output=True,
        text=True,
        check=True,
    )
    assert (
        jwt.decode(json.loads(out.stdout)["anon_key"], secret, algorithms=["HS256"])["role"]
        == "anon"
    )
    assert not (tmp_path / "jwt_secret").exists()


async def test_migrate_is_idempotent_on_an_external_database(
    admin_url: str, tmp_path: Path
) -> None:
    name = "rtm_cli_migrate"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(admin_url, name)
    try:
        env = _env(tmp_path, RTM_DATABASE_URL=url)
        first = await asyncio.to_thread(
            subprocess.run, [*RTM, "migrate"], env=env, capture_output=True, text=True
        )
        assert first.returncode == 0, first.stderr
        second = await asyncio.to_thread(
            subprocess.run, [*RTM, "migrate"], env=env, capture_output=True, text=True
        )
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip() == "schema is up to date"
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def test_bad_database_url_is_a_clear_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [*RTM, "migrate"],
        env=_env(tmp_path, RTM_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none"),
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "Error:" in out.stderr
    assert "Traceback" not in out.stderr


async def test_serve_on_the_embedded_database_then_cleanup_and_db_url(tmp_path: Path) -> None:
    env = _env(tmp_path, RTM_PORT="0")
    proc = await asyncio.create_subprocess_exec(
        *RTM, "serve", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        banner: dict[str, str] = {}
        async with asyncio.timeout(60):
            while "service_role key" not in banner:
                line = (await proc.stdout.readline()).decode()  # type: ignore[union-attr]
                assert line, (await proc.stderr.read()).decode()  # type: ignore[union-attr]
                if ":" in line:
                    key, _, value = line.strip().partition(": ")
                    banner[key] = value
        keys = json.loads(
            subprocess.run(
                [*RTM, "keys", "--json"], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
        assert banner["anon key"] == keys["anon_key"]
        assert banner["service_role key"] == keys["service_role_key"]
        async with aiohttp.ClientSession() as session:
            async with session.get(banner["API URL"] + "/healthz") as response:
                assert response.status == 200
            # Ready once the change feed has connected: wait for it, bounded.
            async with asyncio.timeout(10):
                while True:
                    async with session.get(banner["API URL"] + "/readyz") as response:
                        if response.status == 200:
                            break
                        assert response.status == 503
                    await asyncio.sleep(0.05)
        # A second process on the same data directory shares the running database.
        url = await asyncio.to_thread(
            subprocess.run, [*RTM, "db-url"], env=env, capture_output=True, text=True, check=True
        )
        assert url.stdout.strip() == banner["DB URL"]
        cleaned = await asyncio.to_thread(
            subprocess.run, [*RTM, "cleanup"], env=env, capture_output=True, text=True, check=True
        )
        assert cleaned.stdout.strip() == "0"
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0


async def test_demo_prints_two_links_that_sign_in_to_one_conversation(
    tmp_path: Path, database_url: str, server: RunningServer
) -> None:
    """``rtm demo`` on the server's database: the staff link's token is a staff user's, the
    customer link's a customer's, and both see the conversation with its first message."""
    env = _env(tmp_path, RTM_DATABASE_URL=database_url, RTM_JWT_SECRET=server.secret)
    port = server.http_url.rsplit(":", 1)[1]
    out = await asyncio.to_thread(
        subprocess.run,
        [*RTM, "demo", "--port", port],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    links = [
        line.split(": ", 1)[1].strip() for line in out.stdout.splitlines() if "#token=" in line
    ]
    assert len(links) == 2, out.stdout
    inbox, portal = links
    assert inbox.startswith(f"{server.http_url}/#token=")
    assert portal.startswith(f"{server.http_url}/portal#token=pt_")
    async with aiohttp.ClientSession(server.http_url) as http:
        seen = []
        for link, kind in ((inbox, "staff"), (portal, "customer")):
            headers = {"Authorization": f"Bearer {link.split('#token=', 1)[1]}"}
            async with http.get("/api/me", headers=headers) as response:
                assert (await response.json())["data"]["kind"] == kind
            async with http.get("/api/conversations", headers=headers) as response:
                conversations = (await response.json())["data"]["conversations"]
            mine = [c for c in conversations if c["subject"] == "My order has not arrived"]
            conversation = mine[0]["id"] if kind == "customer" else None
            seen.append((kind, len(mine) >= 1))
            if conversation:
                path = f"/api/conversations/{conversation}/messages"
                async with http.get(path, headers=headers) as response:
                    messages = (await response.json())["data"]["messages"]
                assert [m["senderType"] for m in messages] == ["customer"]
        assert seen == [("staff", True), ("customer", True)]


def test_keys_say_when_they_make_a_new_secret(tmp_path: Path) -> None:
    first = subprocess.run(
        [*RTM, "keys"], env=_env(tmp_path), capture_output=True, text=True, check=True
    )
    assert "made a new JWT secret" in first.stderr
    assert str(tmp_path / "jwt_secret") in first.stderr
    assert "anon key: " in first.stdout and "secret" not in first.stdout
    second = subprocess.run(
        [*RTM, "keys"], env=_env(tmp_path), capture_output=True, text=True, check=True
    )
    assert second.stderr == ""


async def test_serve_on_a_port_in_use_is_one_line_and_exit_code_1(
    tmp_path: Path, database_url: str
) -> None:
    """A port another program listens on (plainly, or with SO_REUSEPORT as another
    ``rtm serve --workers`` does): one line naming it, exit code 1, for one process and for
    several."""
    for reuse_port in (False, True):
        with socket.create_server(("127.0.0.1", 0), reuse_port=reuse_port) as taken:
            port = taken.getsockname()[1]
            env = _env(tmp_path, RTM_DATABASE_URL=database_url, RTM_JWT_SECRET="s" * 48)
            for workers in ("1", "2"):
                out = await asyncio.to_thread(
                    subprocess.run,
                    [*RTM, "serve", "--port", str(port), "--workers", workers],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert out.returncode == 1, (reuse_port, workers, out.stderr)
                assert out.stderr.strip().splitlines() == [
                    f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"
                ], (reuse_port, workers, out.stderr)


async def test_token_staff_and_customer_mint_working_tokens(
    tmp_path: Path, database_url: str, server: RunningServer, seed: Seed
) -> None:
    user, _ = await seed.staff()
    customer, _ = await seed.customer()
    env = _env(tmp_path, RTM_DATABASE_URL=database_url, RTM_JWT_SECRET=server.secret)

    def rtm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*RTM, *args], env=env, capture_output=True, text=True)

    staff = await asyncio.to_thread(rtm, "token", "staff", str(user), "--ttl", "120")
    assert staff.returncode == 0, staff.stderr
    claims = jwt.decode(staff.stdout.strip(), server.secret, algorithms=["HS256"])
    assert claims["sub"] == str(user) and claims["role"] == "authenticated"
    assert claims["exp"] - claims["iat"] == 120
    portal = await asyncio.to_thread(rtm, "token", "customer", str(customer))
    assert portal.returncode == 0, portal.stderr
    token = portal.stdout.strip()
    assert token.startswith("pt_") and "expires" in portal.stderr
    stored = await asyncpg.connect(database_url)
    try:
        row = await stored.fetchrow(
            "SELECT customer_id, expires_at - now() AS ttl FROM portal_tokens "
            "WHERE token_hash = $1",
            hash_portal_token(token),
        )
    finally:
        await stored.close()
    assert row["customer_id"] == customer
    assert 29 * 86400 < row["ttl"].total_seconds() <= 30 * 86400
    async with aiohttp.ClientSession(server.http_url) as http:
        for value, kind in ((staff.stdout.strip(), "staff"), (token, "customer")):
            headers = {"Authorization": f"Bearer {value}"}
            async with http.get("/api/me", headers=headers) as response:
                assert (await response.json())["data"]["kind"] == kind
    # Unknown ids and bad arguments: a clear error, no traceback.
    for args in (
        ("token", "staff", str(uuid.uuid4())),
        ("token", "customer", str(uuid.uuid4())),
        ("token", "staff", "not-a-uuid"),
        ("token", "staff", str(user), "--ttl", "5"),
    ):
        out = await asyncio.to_thread(rtm, *args)
        assert out.returncode != 0 and "Error" in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr and out.stdout == "", args
