"""``rtm serve --tls-cert/--tls-key``: https:// and wss:// served directly, checked with the
official clients trusting a certificate made here with the ``openssl`` command.

Without ``openssl`` on PATH the tests are skipped, except under CI (``CI`` set), where that is a
failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from realtime_messaging.keys import anon_key
from realtime_messaging.server.listen import tls_context
from tests.compat.clients import PAYLOAD, Clients, first_status, unique
from tests.conftest import TEST_SECRET, RunningServer, Seed, running_server
from tests.server.wsclient import RawSocket

RTM = [sys.executable, "-m", "realtime_messaging"]


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 (its own CA), its key, and an unrelated key."""

    cert: Path
    key: Path
    other_key: Path


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        if os.environ.get("CI"):
            pytest.fail("openssl is not on PATH (CI installs the openssl package)")
        pytest.skip("openssl is not on PATH (apt-get install openssl)")
    subprocess.run([openssl, *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    tmp = tmp_path_factory.mktemp("tls")
    made = Certificate(tmp / "cert.pem", tmp / "key.pem", tmp / "other-key.pem")
    _openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
        *("-keyout", str(made.key), "-out", str(made.cert), "-subj", "/CN=127.0.0.1"),
        *("-addext", "subjectAltName=IP:127.0.0.1"),
    )
    _openssl("genrsa", "-out", str(made.other_key), "2048")
    return made


@pytest.fixture(scope="module")
async def tls_server(database_url: str, certificate: Certificate) -> AsyncIterator[RunningServer]:
    async with running_server(
        database_url, tls_cert=certificate.cert, tls_key=certificate.key
    ) as server:
        yield server


@pytest.fixture
def trusting(monkeypatch: pytest.MonkeyPatch, certificate: Certificate) -> Certificate:
    """Clients started from now on trust the test certificate: Python's default context
    (realtime-py's websockets reads ``SSL_CERT_FILE`` at each connect) and Node's."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
    monkeypatch.setenv("NODE_EXTRA_CA_CERTS", str(certificate.cert))
    return certificate


@pytest.fixture
async def clients(tls_server: RunningServer) -> AsyncIterator[Clients]:
    opened = Clients(tls_server)
    try:
        yield opened
    finally:
        await opened.close()


def test_the_server_says_https_and_wss(tls_server: RunningServer) -> None:
    assert tls_server.http_url.startswith("https://127.0.0.1:")
    assert tls_server.ws_url.startswith("wss://127.0.0.1:")


async def test_realtime_py_joins_and_receives_a_broadcast_over_wss(
    tls_server: RunningServer, trusting: Certificate, clients: Clients
) -> None:
    topic = unique("tls-py")
    receiver = clients.py(tls_server.anon_key, name="receiver")
    await receiver.join("room", topic, broadcast=("*",))
    assert (await first_status(receiver, "room"))["status"] == "SUBSCRIBED"
    sender = clients.py(tls_server.anon_key, name="sender")
    await sender.join("room", topic, config={"broadcast": {"ack": True}})
    assert (await first_status(sender, "room"))["status"] == "SUBSCRIBED"

    assert await sender.send("room", "chat", PAYLOAD) == "ok"
    received = await receiver.log.expect(ev="broadcast", channel="room")
    assert (received["event"], received["payload"]) == ("chat", PAYLOAD)


async def test_realtime_js_broadcast_round_trip_over_wss(
    tls_server: RunningServer, trusting: Certificate, clients: Clients
) -> None:
    topic = unique("tls-js")
    js = await clients.js(tls_server.anon_key)
    js.join("room", topic, config={"broadcast": {"ack": True}}, broadcast=("*",))
    assert (await first_status(js, "room"))["status"] == "SUBSCRIBED"
    py = clients.py(tls_server.anon_key)
    await py.join("room", topic, config={"broadcast": {"ack": True}}, broadcast=("*",))
    assert (await first_status(py, "room"))["status"] == "SUBSCRIBED"

    assert await js.call("send", channel="room", event="ping", payload=PAYLOAD) == "ok"
    ping = await py.log.expect(ev="broadcast", channel="room", event="ping")
    assert ping["payload"] == PAYLOAD
    assert await py.send("room", "pong", {"to": "js"}) == "ok"
    pong = await js.log.expect(ev="broadcast", channel="room", event="pong")
    assert pong["payload"] == {"to": "js"}


async def test_https_health_and_api(
    tls_server: RunningServer, certificate: Certificate, seed: Seed
) -> None:
    _, staff_token = await seed.staff()
    trust = ssl.create_default_context(cafile=certificate.cert)
    connector = aiohttp.TCPConnector(ssl=trust)
    async with aiohttp.ClientSession(tls_server.http_url, connector=connector) as http:
        async with http.get("/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}
        async with http.post(
            "/api/messages/realtime/subscribe",
            json={},
            headers={"Authorization": f"Bearer {staff_token}"},
        ) as response:
            assert response.status == 200, await response.text()
            body = await response.json()
        # The URL clients are told to use is the https one.
        assert body["data"]["supabaseUrl"] == tls_server.http_url


async def test_plain_http_and_ws_on_the_tls_port_fail(tls_server: RunningServer) -> None:
    plain = tls_server.http_url.replace("https://", "http://", 1)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(plain + "/healthz") as response:
                await response.read()
    with pytest.raises(aiohttp.ClientError):
        sock = await RawSocket.connect(
            tls_server.ws_url.replace("wss://", "ws://", 1), tls_server.anon_key
        )
        await sock.close()


def test_the_context_refuses_tls_below_1_2(certificate: Certificate) -> None:
    context = tls_context(certificate.cert, certificate.key)
    assert context is not None
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert tls_context(None, None) is None


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``rtm serve`` with bad TLS settings: it must refuse before starting anything."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTM_")}
    env["RTM_DATA_DIR"] = str(tmp_path / "data")
    return subprocess.run(
        [*RTM, "serve", "--port", "0", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_tls_settings_that_cannot_work_are_clear_errors(
    tmp_path: Path, certificate: Certificate
) -> None:
    cert, key, other = str(certificate.cert), str(certificate.key), str(certificate.other_key)
    alone = _serve(tmp_path, "--tls-cert", cert)
    assert alone.returncode == 2
    assert "--tls-cert (RTM_TLS_CERT) and --tls-key (RTM_TLS_KEY) go together" in alone.stderr
    key_alone = _serve(tmp_path, "--tls-key", key)
    assert key_alone.returncode == 2
    missing = _serve(tmp_path, "--tls-cert", cert, "--tls-key", str(tmp_path / "nope.pem"))
    assert missing.returncode == 1
    assert "cannot read the TLS private key" in missing.stderr
    mismatch = _serve(tmp_path, "--tls-cert", cert, "--tls-key", other)
    assert mismatch.returncode == 1
    assert "the private key does not match the certificate" in mismatch.stderr
    for out in (alone, key_alone, missing, mismatch):
        assert "Traceback" not in out.stderr
        assert "realtime-messaging is running" not in out.stdout
    # Refused before the embedded database was started.
    assert not (tmp_path / "data").exists()


def _der(pem: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem)


async def _presented(port: int) -> bytes:
    """The certificate a new handshake on ``port`` presents (not verified: it is compared)."""
    pem = await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", port), timeout=5)
    return _der(pem)


@asynccontextmanager
async def _rtm_serve(
    database_url: str, tmp_path: Path, *args: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int, Path]]:
    """``rtm serve`` as a process of its own (signals go to it, not to the test), its port and
    its log; stopped with SIGTERM on exit."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "rtm.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTM_")}
    env.update(RTM_DATABASE_URL=database_url, RTM_JWT_SECRET=TEST_SECRET)
    with open(log, "wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *RTM, "serve", "--port", str(port), *args, env=env, stdout=out, stderr=out
        )
    try:
        async with asyncio.timeout(60):
            while "is running" not in log.read_text():
                assert proc.returncode is None, log.read_text()
                await asyncio.sleep(0.05)
        yield proc, port, log
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)


async def _logged(proc: asyncio.subprocess.Process, log: Path, text: str) -> None:
    async with asyncio.timeout(10):
        while text not in log.read_text():
            assert proc.returncode is None, log.read_text()
            await asyncio.sleep(0.05)


async def test_sighup_reloads_a_renewed_certificate_without_dropping_a_socket(
    database_url: str, tmp_path: Path, certificate: Certificate
) -> None:
    """``systemctl reload`` of one process after a renewal: new handshakes present the new
    certificate, an open wss socket carries on, and files that cannot work are refused with the
    old certificate still served."""
    renewed = tmp_path / "renewed"
    renewed.mkdir()
    new_cert, new_key = renewed / "cert.pem", renewed / "key.pem"
    _openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
        *("-keyout", str(new_key), "-out", str(new_cert), "-subj", "/CN=127.0.0.1"),
        *("-addext", "subjectAltName=IP:127.0.0.1"),
    )
    live_cert, live_key = tmp_path / "live-cert.pem", tmp_path / "live-key.pem"
    shutil.copy(certificate.cert, live_cert)
    shutil.copy(certificate.key, live_key)
    trust = ssl.create_default_context(cafile=str(certificate.cert))
    trust.load_verify_locations(str(new_cert))
    args = ("--tls-cert", str(live_cert), "--tls-key", str(live_key))
    async with _rtm_serve(database_url, tmp_path, *args) as (proc, port, log):
        assert await _presented(port) == _der(certificate.cert.read_text())
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(
                f"wss://127.0.0.1:{port}/realtime/v1/websocket",
                params={"apikey": anon_key(TEST_SECRET), "vsn": "1.0.0"},
                ssl=trust,
            ) as ws,
        ):
            shutil.copy(new_cert, live_cert)
            shutil.copy(new_key, live_key)
            proc.send_signal(signal.SIGHUP)
            await _logged(proc, log, "SIGHUP: TLS certificate reloaded")
            assert await _presented(port) == _der(new_cert.read_text())

            # A renewal gone wrong (a key that does not match): refused, still the new one.
            shutil.copy(certificate.other_key, live_key)
            proc.send_signal(signal.SIGHUP)
            await _logged(proc, log, "TLS certificate not reloaded")
            assert "the private key does not match the certificate" in log.read_text()
            assert await _presented(port) == _der(new_cert.read_text())

            # The socket opened before both reloads still answers.
            await ws.send_json(
                {"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "9"}
            )
            reply = await ws.receive_json(timeout=10)
            assert (reply["ref"], reply["payload"]["status"]) == ("9", "ok")
        assert proc.returncode is None


async def test_sighup_to_one_process_without_tls_keeps_it_serving(
    database_url: str, tmp_path: Path
) -> None:
    """Nothing to reload: the process says so and serves on (SIGHUP's default would end it)."""
    async with _rtm_serve(database_url, tmp_path) as (proc, port, log):
        proc.send_signal(signal.SIGHUP)
        await _logged(proc, log, "SIGHUP: nothing to reload")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
        assert proc.returncode is None
