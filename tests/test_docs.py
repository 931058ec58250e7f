"""The documentation says what is true: its code runs, and its lists name everything there is.

**Code blocks.** A fenced block of README.md or docs/*.md runs here when an HTML comment right
before it (blank lines between allowed) marks it::

    <!-- test -->
    <!-- test: expect "customer unread after: 0" -->

``expect "..."`` (repeatable) names text its output must contain; every marked block must exit
with status 0 within 30 s. Blocks are run as a reader would run them, against a real server (the
``server`` fixture), from the project's root:

- ``python``: the venv's Python, with ``ANON_KEY`` and ``SERVICE_KEY`` defined before the code;
- ``js``: Node, as an ES module, with ``const ANON_KEY`` and ``SERVICE_KEY`` before the code and
  the packages of ``tests/compat`` (realtime-js, supabase-js, ws) importable;
- ``sh``/``bash``: bash with ``set -euo pipefail``, ``ANON_KEY``/``SERVICE_KEY`` in the
  environment and the server named as ``rtm serve`` reads it (``RTM_HOST``, ``RTM_PORT``,
  ``RTM_JWT_SECRET``; ``RTM_DATA_DIR`` a temporary directory), the venv's ``bin`` first on
  ``PATH``.

In every block ``127.0.0.1:4000`` (where ``rtm serve`` listens by default) is replaced with the
test server's address. Unmarked blocks are illustrations (fragments, output, other languages);
scripts that blocks point to (examples/) run in tests/test_examples.py, and this module checks
that every one of them does.

**Lists.** Every migration file is named in docs/database.md; every ``RTM_`` setting that
config.py reads (or a CLI option takes from the environment) is in README's settings table;
every route of the app is in ``/openapi.json`` or named in docs/api.md; every example script is
in examples/README.md and run by tests/test_examples.py.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

from realtime_messaging.server.app import build_app
from tests.conftest import TEST_SECRET, RunningServer, make_settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNERS = {"python", "js", "sh", "bash"}
BLOCK_TIMEOUT = 30.0
DEFAULT_ADDRESS = "127.0.0.1:4000"

_MARKER = re.compile(r"<!--\s*test\b(?P<options>[^>]*?)-->")
_FENCE = re.compile(r"\s*```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```", re.S | re.M)
_EXPECT = re.compile(r'expect\s+"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    code: str
    expect: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def marked_blocks(path: Path) -> list[Block]:
    """The blocks of ``path`` marked ``<!-- test ... -->``; a marker with no block after it, or
    before a block in a language this module cannot run, is an error."""
    text = path.read_text()
    blocks = []
    for marker in _MARKER.finditer(text):
        line = text.count("\n", 0, marker.start()) + 1
        options = marker.group("options").lstrip(":").strip()
        fence = _FENCE.match(text, marker.end())
        if fence is None:
            raise AssertionError(f"{path.name}:{line}: a test marker with no code block after it")
        lang = fence.group("lang")
        if lang not in RUNNERS:
            raise AssertionError(f"{path.name}:{line}: cannot run a {lang or 'plain'} block")
        unknown = _EXPECT.sub("", options).strip()
        if unknown:
            raise AssertionError(f"{path.name}:{line}: unknown test options {unknown!r}")
        expect = tuple(e.replace('\\"', '"') for e in _EXPECT.findall(options))
        blocks.append(Block(path, line, lang, fence.group("code"), expect))
    return blocks


BLOCKS = [block for path in DOCS for block in marked_blocks(path)]


def test_the_readme_and_docs_have_runnable_blocks() -> None:
    """The markers did not all go missing: the README's examples of each kind stay tested."""
    readme = {b.lang for b in BLOCKS if b.path.name == "README.md"}
    assert {"python", "js", "sh"} <= readme, readme
    assert any(b.path.name == "sdk.md" for b in BLOCKS)


async def _run(
    argv: list[str], cwd: Path, env: dict[str, str], stdin: bytes | None = None
) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(stdin), BLOCK_TIMEOUT)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return -1, out.decode(errors="replace") + f"\n(killed after {BLOCK_TIMEOUT} s)"
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
async def test_block_runs(block: Block, server: RunningServer, tmp_path: Path) -> None:
    address = urlsplit(server.http_url)
    code = block.code.replace(DEFAULT_ADDRESS, address.netloc)
    env = {**os.environ, "ANON_KEY": server.anon_key, "SERVICE_KEY": server.service_key}
    for name in ("RTM_URL", "RTM_ACCESS_TOKEN", "RTM_DATABASE_URL"):
        env.pop(name, None)
    if block.lang == "python":
        script = tmp_path / "block.py"
        script.write_text(
            f"ANON_KEY = {server.anon_key!r}\nSERVICE_KEY = {server.service_key!r}\n{code}"
        )
        status, output = await _run([sys.executable, str(script)], ROOT, env)
    elif block.lang == "js":
        modules = ROOT / "tests" / "compat" / "node_modules"
        if not (modules / "@supabase" / "realtime-js").is_dir():
            pytest.fail("tests/compat/node_modules is missing: run `npm ci --prefix tests/compat`")
        (tmp_path / "node_modules").symlink_to(modules)
        script = tmp_path / "block.mjs"
        script.write_text(
            f"const ANON_KEY = {server.anon_key!r}\n"
            f"const SERVICE_KEY = {server.service_key!r}\n{code}"
        )
        status, output = await _run(["node", str(script)], tmp_path, env)
    else:
        env.update(
            RTM_HOST=address.hostname or "127.0.0.1",
            RTM_PORT=str(address.port),
            RTM_JWT_SECRET=server.secret,
            RTM_DATA_DIR=str(tmp_path / "data"),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        )
        argv = ["bash", "-euo", "pipefail", "-s"]
        status, output = await _run(argv, ROOT, env, stdin=code.encode())
    assert status == 0, f"{block.name} ({block.lang}) failed with {status}:\n{output}"
    for text in block.expect:
        assert text in output, f"{block.name}: {text!r} not in its output:\n{output}"


# -- lists ------------------------------------------------------------------------------------


def test_every_migration_is_named_in_database_md() -> None:
    migrations = sorted(
        p.name for p in (ROOT / "src/realtime_messaging/store/migrations").glob("*.sql")
    )
    assert len(migrations) >= 10
    text = (ROOT / "docs" / "database.md").read_text()
    missing = [name for name in migrations if f"`{name}`" not in text]
    assert missing == [], f"docs/database.md does not list {missing}"


def _settings_read() -> set[str]:
    config = (ROOT / "src/realtime_messaging/config.py").read_text()
    cli = (ROOT / "src/realtime_messaging/cli.py").read_text()
    return set(re.findall(r'"(RTM_[A-Z0-9_]+)"', config)) | set(
        re.findall(r'envvar="(RTM_[A-Z0-9_]+)"', cli)
    )


def test_every_setting_is_in_the_readme_table() -> None:
    settings = _settings_read()
    assert {"RTM_DATABASE_URL", "RTM_PORT", "RTM_RATE_TYPING", "RTM_BROKER"} <= settings
    readme = (ROOT / "README.md").read_text()
    start = readme.index("| variable | flag | default | meaning |")
    table = readme[start : readme.index("\n\n", start)]
    documented = set(re.findall(r"`(RTM_[A-Z0-9_]+)`", table))
    assert sorted(settings - documented) == [], "missing from README's settings table"


def _normalized(path: str) -> str:
    return re.sub(r"{[^}]*}", "{}", path.split("?", 1)[0])


def _named_in_api_md() -> set[tuple[str, str]]:
    """``(method, path)`` of every route a table row of docs/api.md names: "`GET /a`, `/b`"
    names GET /a and GET /b."""
    named = set()
    for line in (ROOT / "docs" / "api.md").read_text().splitlines():
        if not line.startswith("|"):
            continue
        method = None
        for token in re.findall(r"`([^`]+)`", line.split("|")[1]):
            found = re.match(r"(GET|POST|PUT|PATCH|DELETE) (/\S*)$", token)
            if found:
                method, token = found.groups()
            if method is not None and token.startswith("/"):
                named.add((method, _normalized(token)))
    return named


async def test_every_route_is_in_the_openapi_document_or_api_md(
    pool: asyncpg.Pool, database_url: str, server: RunningServer
) -> None:
    app = await build_app(make_settings(), pool, database_url, TEST_SECRET)
    routes = {
        (route.method, _normalized(route.resource.canonical))
        for route in app.router.routes()
        if route.resource is not None and route.method not in ("HEAD", "OPTIONS", "*")
    }
    assert len(routes) > 30
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.http_url}/openapi.json") as response,
    ):
        spec = await response.json()
    in_spec = {(m.upper(), _normalized(p)) for p, ops in spec["paths"].items() for m in ops}
    missing = sorted(routes - in_spec - _named_in_api_md())
    assert missing == [], "routes neither in /openapi.json nor in docs/api.md"


def test_every_example_is_listed_and_run() -> None:
    scripts = sorted(p.name for p in (ROOT / "examples").iterdir() if p.suffix in (".py", ".sh"))
    listing = (ROOT / "examples" / "README.md").read_text()
    runs = (ROOT / "tests" / "test_examples.py").read_text()
    assert [s for s in scripts if f"({s})" not in listing] == [], "not in examples/README.md"
    assert [s for s in scripts if f'"{s}"' not in runs] == [], "not run by test_examples.py"
