"""The ``rtm`` command: serve, migrate, keys, token, cleanup, db-url.

Imports beyond click and the settings are made where they are used, so that a command loads only
what it needs (the server and its libraries are a quarter of a second).
"""

from __future__ import annotations

import gc
import json
import os
import socket
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import click

from .config import Settings
from .exceptions import RealtimeMessagingError

if TYPE_CHECKING:
    from .store.database import Database

T = TypeVar("T")


def _run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        import uvloop

        return uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is absent only on Windows
        import asyncio

        return asyncio.run(main())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--database-url", envvar="RTM_DATABASE_URL", help="PostgreSQL URL; unset: embedded.")
@click.option("--data-dir", envvar="RTM_DATA_DIR", type=click.Path(path_type=Path), help="./.rtm")
@click.option("--jwt-secret", envvar="RTM_JWT_SECRET", help="HS256 secret for keys and tokens.")
@click.option("--redis-url", envvar="RTM_REDIS_URL", help="Redis URL for several processes.")
@click.pass_context
def cli(
    ctx: click.Context,
    database_url: str | None,
    data_dir: Path | None,
    jwt_secret: str | None,
    redis_url: str | None,
) -> None:
    """Real-time messaging on PostgreSQL, speaking the Supabase Realtime protocol."""
    ctx.obj = Settings.from_env().with_overrides(
        database_url=database_url or None,
        data_dir=data_dir,
        jwt_secret=jwt_secret or None,
        redis_url=redis_url or None,
    )


def _database(settings: Settings) -> Database:
    from .store.database import Database

    try:
        return Database(settings)
    except RealtimeMessagingError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command()
@click.pass_obj
def migrate(settings: Settings) -> None:
    """Apply pending migrations (idempotent)."""
    db = _database(settings)
    try:
        applied = _run(db.migrate)
    except RealtimeMessagingError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.close()
    click.echo("\n".join(f"applied {name}" for name in applied) or "schema is up to date")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_obj
def keys(settings: Settings, as_json: bool) -> None:
    """Print the anon and service_role keys."""
    from .keys import anon_key, service_role_key

    secret = _secret(settings)
    anon, service = anon_key(secret), service_role_key(secret)
    if as_json:
        click.echo(json.dumps({"anon_key": anon, "service_role_key": service}))
    else:
        click.echo(f"anon key: {anon}\nservice_role key: {service}")


def _secret(settings: Settings) -> str:
    """The JWT secret; says on stderr when it had to be made (no ``RTM_JWT_SECRET``, none kept
    in the data directory yet)."""
    from .keys import load_or_create_secret, secret_file

    path = secret_file(settings)
    new = not settings.jwt_secret and not path.exists()
    secret = load_or_create_secret(settings)
    if new:
        click.echo(f"made a new JWT secret in {path} (keys signed with it are new)", err=True)
    return secret


@cli.group()
def token() -> None:
    """Mint a token for a staff user or a customer (printed once, on stdout)."""


@token.command("staff")
@click.argument("user_id", type=click.UUID)
@click.option(
    "--ttl",
    type=click.IntRange(60, 365 * 24 * 3600),
    default=3600,
    show_default=True,
    help="Lifetime in seconds.",
)
@click.pass_obj
def token_staff(settings: Settings, user_id: UUID, ttl: int) -> None:
    """A staff JWT (role authenticated, sub USER_ID) signed with the server's secret."""
    from .tokens import mint_staff_token

    db = _database(settings)
    secret = _secret(settings)

    async def run() -> bool:
        await db.migrate()
        async with db.connect() as conn:
            return bool(await conn.fetchval("SELECT 1 FROM public.users WHERE id = $1", user_id))

    try:
        if not _run(run):
            raise click.ClickException(f"no staff user {user_id} (rtm's users table)")
    except RealtimeMessagingError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.close()
    click.echo(mint_staff_token(secret, user_id, ttl_seconds=ttl))


@token.command("customer")
@click.argument("customer_id", type=click.UUID)
@click.option(
    "--ttl",
    type=click.IntRange(60, 365 * 24 * 3600),
    default=30 * 24 * 3600,
    show_default=True,
    help="Lifetime in seconds.",
)
@click.pass_obj
def token_customer(settings: Settings, customer_id: UUID, ttl: int) -> None:
    """A portal token for CUSTOMER_ID (only its hash is stored; revoke it with the admin API)."""
    from .server.api.admin import create_portal_token

    db = _database(settings)

    async def run() -> tuple[UUID, str, datetime] | None:
        await db.migrate()
        async with db.connect() as conn:
            return await create_portal_token(conn, customer_id, ttl)

    try:
        issued = _run(run)
    except RealtimeMessagingError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.close()
    if issued is None:
        raise click.ClickException(f"no customer {customer_id} (rtm's customers table)")
    token_id, value, expires = issued
    click.echo(value)
    click.echo(f"portal token {token_id}, expires {expires.isoformat()}", err=True)


@cli.command("db-url")
@click.pass_obj
def db_url(settings: Settings) -> None:
    """Print the URL of the database in use (starts the embedded one if needed)."""
    db = _database(settings)
    click.echo(db.url)
    if db.embedded:
        # Keep the embedded server running for whoever asked for its URL.
        db.detach()


@cli.command()
@click.pass_obj
def cleanup(settings: Settings) -> None:
    """Delete expired typing indicators and print how many there were."""
    db = _database(settings)

    async def run() -> int:
        await db.migrate()
        async with db.connect() as conn:
            return int(await conn.fetchval("SELECT cleanup_expired_typing_indicators()"))

    try:
        click.echo(_run(run))
    except RealtimeMessagingError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.close()


@cli.command()
@click.option("--host", envvar="RTM_HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="RTM_PORT", type=int, default=4000, show_default=True)
@click.option(
    "--public-url", envvar="RTM_PUBLIC_URL", help="Base of the links; default: http(s)://HOST:PORT."
)
@click.pass_obj
def demo(settings: Settings, host: str, port: int, public_url: str | None) -> None:
    """Create a staff user, a customer and a conversation; print the two sign-in links."""
    from .demo import create_demo
    from .keys import load_or_create_secret
    from .server.listen import base_url

    db = _database(settings)
    secret = load_or_create_secret(settings)

    async def run() -> tuple[str, str]:
        await db.migrate()
        async with db.connect() as conn:
            created = await create_demo(conn, secret)
        default_url = base_url(host, port, tls=settings.tls_cert is not None)
        return created.links((public_url or default_url).rstrip("/"))

    try:
        inbox, portal = _run(run)
    except RealtimeMessagingError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.close()
    click.echo(
        "A conversation is waiting. With `rtm serve` running, open each link in its own tab:\n"
        f"  staff inbox:   {inbox}\n"
        f"  customer chat: {portal}"
    )


def _public_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if not value:
        return None
    from .server.public_url import public_base_url  # aiohttp: only when there is one to check

    try:
        return public_base_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _workers(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """``--workers``: a number of processes, or ``auto`` for one per CPU."""
    if value.strip().lower() == "auto":
        return os.cpu_count() or 1
    try:
        count = int(value)
    except ValueError:
        raise click.BadParameter(f"expected a number or auto, not {value!r}") from None
    if count < 1:
        raise click.BadParameter("needs at least 1")
    return count


@cli.command()
@click.option("--host", envvar="RTM_HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="RTM_PORT", type=int, default=4000, show_default=True)
@click.option(
    "--public-url",
    envvar="RTM_PUBLIC_URL",
    callback=_public_url,
    help="URL clients reach this server at; default: http(s)://HOST:PORT.",
)
@click.option(
    "--workers",
    envvar="RTM_WORKERS",
    default="1",
    show_default=True,
    callback=_workers,
    help="Processes serving the port (auto: one per CPU); several share a broker.",
)
@click.option(
    "--tls-cert",
    envvar="RTM_TLS_CERT",
    type=click.Path(path_type=Path),
    help="PEM certificate (chain): serve https:// and wss://. Needs --tls-key.",
)
@click.option(
    "--tls-key", envvar="RTM_TLS_KEY", type=click.Path(path_type=Path), help="Its PEM key."
)
@click.option(
    "--log-level",
    envvar="RTM_LOG_LEVEL",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
)
@click.option(
    "--log-format",
    envvar="RTM_LOG_FORMAT",
    type=click.Choice(["text", "json"], case_sensitive=False),
    default="text",
    show_default=True,
    help="json: one JSON object per line.",
)
# Internal: the socket a worker of ``--workers`` shares with its supervisor.
@click.option("--worker-link", type=int, hidden=True)
@click.pass_obj
def serve(
    settings: Settings,
    host: str,
    port: int,
    public_url: str | None,
    workers: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    log_level: str,
    log_format: str,
    worker_link: int | None,
) -> None:
    """Run the HTTP and WebSocket server."""
    from .logs import configure

    configure(log_level, log_format)
    # The workers of --workers inherit the environment: the same logging.
    os.environ["RTM_LOG_LEVEL"], os.environ["RTM_LOG_FORMAT"] = log_level, log_format

    settings = settings.with_overrides(
        host=host,
        port=port,
        public_url=public_url,
        workers=workers,
        tls_cert=tls_cert or None,
        tls_key=tls_key or None,
    )
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise click.UsageError(
            "--tls-cert (RTM_TLS_CERT) and --tls-key (RTM_TLS_KEY) go together: give both"
        )
    try:
        # Checked before anything starts: a bad file is an error now, not a failed handshake
        # per client later.
        from .server.listen import tls_context

        tls_context(settings.tls_cert, settings.tls_key)
        _ = settings.broker_kind  # ValueError for an RTM_BROKER that cannot work
    except (RealtimeMessagingError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    # Start-up only allocates what lives as long as the process (modules, the app), so the
    # collector has nothing to find in it yet: off until the server has frozen all of it
    # (server.app.serve turns it on again), it saves a tenth of the launch (issue 16). Not in
    # the supervisor of --workers, which never gets there.
    if worker_link is not None or settings.workers == 1:
        gc.disable()
    try:
        _serve(settings, worker_link)
    finally:
        gc.enable()


def _serve(settings: Settings, worker_link: int | None) -> None:
    """Open the database, then load and run the server (or the supervisor of --workers)."""
    db = _database(settings)
    from .server.app import serve as run_server

    async def main() -> None:
        if worker_link is not None:
            await run_server(settings, db, link=socket.socket(fileno=worker_link))
        elif settings.workers > 1:
            from .server.supervisor import supervise

            await supervise(settings, db)
        else:
            await run_server(settings, db)

    try:
        _run(main)
    except RealtimeMessagingError as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        pass
    finally:
        db.close()


def main() -> None:
    cli(prog_name="rtm")
