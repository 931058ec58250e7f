"""Where and how ``rtm serve`` listens: its socket (one port for every worker), TLS, its URL and
the banner it prints."""

from __future__ import annotations

import errno
import os
import socket
import ssl
from pathlib import Path

from ..exceptions import ConfigurationError
from ..keys import anon_key, service_role_key
from .public_url import listen_url

#: Connections the kernel queues per listening socket before the server accepts them.
BACKLOG = 4096


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The server's TLS context (TLS 1.2 or newer) for a PEM certificate chain and its private
    key; None when neither is given. Checked at start, so that a missing file, a key that does
    not match or an encrypted key (which would ask for a password on the terminal) is a clear
    error instead of a server that fails every handshake."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigurationError(
            "TLS needs both a certificate (--tls-cert, RTM_TLS_CERT) and its private key "
            "(--tls-key, RTM_TLS_KEY)"
        )
    for what, path in (("certificate", cert), ("private key", key)):
        try:
            path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the TLS {what} {path}: {exc.strerror or exc}"
            ) from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except ssl.SSLError as exc:
        problem = (
            "the private key does not match the certificate"
            if exc.reason == "KEY_VALUES_MISMATCH"
            else "expected a PEM certificate (chain) and an unencrypted PEM private key"
        )
        raise ConfigurationError(
            f"cannot use TLS certificate {cert} with key {key}: {problem}"
        ) from None
    return context


def reload_certificate(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    """Load a renewed certificate and key into a live context: handshakes from then on present
    them, connections already open keep theirs. The files are first checked on a context of
    their own (:func:`tls_context`'s errors), so that bad ones leave the live context as it was."""
    tls_context(cert, key)
    context.load_cert_chain(cert, key, password=_no_password)


def _no_password() -> str:
    """Never prompt: an encrypted key gets an empty password, which fails to decrypt it."""
    return ""


def base_url(host: str, port: int, *, tls: bool) -> str:
    """``http(s)://host:port``: where a server on ``host:port`` is reached."""
    url = listen_url(host, port)
    return "https" + url.removeprefix("http") if tls else url


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bound_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: any free port), not yet listening: the
    site listens once the application is built, so that a connection that comes during the
    start is refused (clients retry at once) rather than queued behind it, and the server
    serves from its first accepted connection. With ``reuse_port`` (SO_REUSEPORT) each worker
    of ``rtm serve --workers`` listens on the same port with a socket of its own, and the
    kernel spreads new connections over them."""
    family = _family(host)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise _cannot_listen(host, port, exc) from exc
    return sock


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind ``host:port`` with SO_REUSEPORT and never listen. The supervisor holds this while
    its workers come and go, so that no other program takes the port in between, and it turns
    port 0 into the real port that every worker then binds. No connection ever lands on it:
    the kernel only hands connections to listening sockets."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise _cannot_listen(host, port, exc) from exc
    if port and _answers(host, port):
        # SO_REUSEPORT lets this bind succeed beside another ``rtm serve --workers`` (same
        # user, same options): it would silently share the port with it.
        sock.close()
        raise _cannot_listen(host, port, OSError(errno.EADDRINUSE, "in use"))
    return sock


def _answers(host: str, port: int) -> bool:
    """Whether something already accepts connections on ``host:port``."""
    probe = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        with socket.create_connection((probe, port), timeout=0.5):
            return True
    except OSError:
        return False


def _cannot_listen(host: str, port: int, exc: OSError) -> ConfigurationError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return ConfigurationError(f"cannot listen on {host}:{port}: {reason}")


def banner(url: str, database_url: str, secret: str) -> str:
    """What ``rtm serve`` prints once it serves, as ``supabase start`` does."""
    return (
        f"realtime-messaging is running.\n"
        f"  Staff inbox: {url}/ (sign-in links: rtm demo)\n"
        f"  API URL: {url}\n"
        f"  Realtime URL: {url.replace('http', 'ws', 1)}/realtime/v1/websocket\n"
        f"  DB URL: {database_url}\n"
        f"  anon key: {anon_key(secret)}\n"
        f"  service_role key: {service_role_key(secret)}"
    )
