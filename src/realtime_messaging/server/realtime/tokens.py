"""Token lifetime: a channel closes when its token expires, is replaced by one that may not
read the topic, or (portal tokens) is revoked or deleted."""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

import asyncpg

from ...domain.identity import Identity
from ...protocol.connection import subtopic
from ...protocol.events import AccessTokenReceived
from ..auth import AuthError, AuthUnavailable, expired_message
from .channel import Channel
from .session import Session
from .shared import Shared

log = logging.getLogger(__package__)

#: Every this many token-check rounds, the tokens in use are checked in full (deleted ones).
_FULL_CHECK_EVERY = 15


def arm_expiry(session: Session, channel: Channel) -> None:
    """Close the channel when its token expires."""
    exp = channel.identity.expires_at
    if exp is None:
        session.server.expiries.discard(channel)
    else:
        session.server.expiries.add(channel, exp, partial(expire, session, channel))


def expire(session: Session, channel: Channel) -> None:
    now = time.time()
    session.close_channel(channel, expired_message(channel.identity.expires_at or now, now))


async def handle_access_token(session: Session, event: AccessTokenReceived) -> None:
    """A new token for a channel (realtime-js sends one before the old expires): the channel
    goes on under it if it may still read the topic, and closes otherwise. No reply."""
    token = event.token
    channel = session.channels.get(event.topic)
    if channel is None or not token or token.startswith("sb_"):
        return
    server = session.server
    access = channel.access
    try:
        identity = await server.auth.identify(token)
        allowed = await server.may_join(identity, channel.topic)
        if allowed and access is not None:
            # The policies decided for the old token; a new one is checked again.
            access = await server.channel_access(identity, channel.topic)
            allowed = access is not None and access.joins
    except AuthUnavailable:
        return  # keep the channel on its current token; the client refreshes again
    except AuthError as exc:
        session.close_channel(channel, exc.message)
        return
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("private channel check of %s failed: %s", channel.topic, exc)
        return  # keep the channel on its current token, as when auth is unavailable
    if session.channels.get(channel.topic) is not channel:
        return
    if not allowed:
        session.close_channel(
            channel,
            f"You no longer have permission to read from this Channel topic: {subtopic(channel.topic)}",
        )
        return
    staff = await _staff_again(session, channel, identity)
    if session.channels.get(channel.topic) is not channel:
        return
    channel.identity = identity
    channel.access = access
    session.hold(identity)
    server.liveness.attach(session.id, identity)
    arm_expiry(session, channel)
    if channel.config.postgres_changes:
        server.router.subscribe(channel, channel.config.postgres_changes, identity, staff)


async def _staff_again(session: Session, channel: Channel, identity: Identity) -> frozenset[str]:
    """The staff a customer's channel follows under its new token, read again (an assignment
    may have moved); if the database cannot say, the same customer keeps what the channel
    followed: the new token is valid, and the old one may expire before the next refresh."""
    server = session.server
    try:
        return await server.staff_for(identity, channel.config.postgres_changes)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("staff of %s could not be read again: %s", channel.topic, exc)
        if identity.customer_id is None or identity.customer_id != channel.identity.customer_id:
            return frozenset()
        return frozenset(server.router.staff_of(channel))


def revoke(session: Session, invalid: set[str]) -> None:
    """Close channels (or the whole socket) held by portal tokens that are no longer valid."""
    if not invalid:
        return
    if session.identity.token_hash in invalid:
        for channel in list(session.channels.values()):
            session.close_channel(channel, "Token has been revoked")
        session.close_soon(1008, "Token has been revoked")
        return
    for channel in list(session.channels.values()):
        if channel.identity.token_hash in invalid:
            session.close_channel(channel, "Token has been revoked")


async def sweep(server: Shared[Session]) -> None:
    """Close what revoked or expired portal tokens hold, within one check interval.

    Each round asks only for tokens that ended since the last one and looks their holders
    up by hash, so a round costs nothing with ten thousand customers connected. Tokens can
    also vanish (a customer deleted): every ``_FULL_CHECK_EVERY`` rounds the hashes in use
    are checked in full, in slices that let the loop breathe.
    """
    since = None
    rounds = 0
    while True:
        await asyncio.sleep(server.settings.token_check_interval)
        rounds += 1
        try:
            ended, since = await server.auth.portal_tokens_ended_since(since)
            if rounds % _FULL_CHECK_EVERY == 0:
                ended |= await _vanished(server)
        except Exception:  # the database may be away; the next round retries
            log.warning("portal token check failed", exc_info=True)
            continue
        for token_hash in ended:
            for session in server.portal_holders.of(token_hash):
                revoke(session, ended)


async def _vanished(server: Shared[Session]) -> set[str]:
    in_use = server.portal_holders.in_use()
    gone: set[str] = set()
    for start in range(0, len(in_use), 500):
        gone |= await server.auth.invalid_portal_tokens(set(in_use[start : start + 500]))
    return gone
