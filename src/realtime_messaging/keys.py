"""The JWT secret and the Supabase-style anon and service_role keys derived from it."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import jwt

from .config import Settings

ISSUER = "realtime-messaging"


def secret_file(settings: Settings) -> Path:
    """Where the generated secret is kept (used only when ``RTM_JWT_SECRET`` is unset)."""
    return Path(settings.data_dir).expanduser() / "jwt_secret"


def load_or_create_secret(settings: Settings) -> str:
    """``RTM_JWT_SECRET`` if set, else a secret generated once and kept in the data directory."""
    if settings.jwt_secret:
        return settings.jwt_secret
    path = secret_file(settings)
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write aside, then link into place: when two processes race, the first link wins and
    # the loser reads the winner's complete file, never a half-written one.
    tmp = path.with_name(f".jwt_secret.{os.getpid()}")
    tmp.write_text(secrets.token_urlsafe(48), encoding="utf-8")
    tmp.chmod(0o600)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text(encoding="utf-8").strip()


def anon_key(secret: str) -> str:
    return _stable_key(secret, "anon")


def service_role_key(secret: str) -> str:
    return _stable_key(secret, "service_role")


# Keys derived from one secret are the same across restarts, like a Supabase project's keys:
# fixed issue time (2026-01-01) and expiry (2036-01-01).
_KEY_IAT = 1_767_225_600
_KEY_EXP = 2_082_758_400


def _stable_key(secret: str, role: str) -> str:
    return jwt.encode(
        {"iss": ISSUER, "role": role, "iat": _KEY_IAT, "exp": _KEY_EXP},
        secret,
        algorithm="HS256",
    )
