"""Which typing changes are the manager's own: decided from its token, read once per token.

Every typing change a subscription receives asks the question; decoding the JWT for each was a
third of the SDK benchmark's client CPU (issue 16).
"""

from __future__ import annotations

import uuid
from typing import Any

import jwt
import pytest

from realtime_messaging.client import RealtimeMessagingManager, TypingIndicatorEvent


def _staff_token(user_id: str) -> str:
    return jwt.encode({"role": "authenticated", "sub": user_id}, "x" * 32, "HS256")


def _typing(user_id: str | None = None, customer_id: str | None = None) -> TypingIndicatorEvent:
    return TypingIndicatorEvent(
        id=str(uuid.uuid4()),
        conversation_id=str(uuid.uuid4()),
        is_typing=True,
        started_at="2026-12-05T00:00:00Z",
        expires_at="2026-12-05T00:00:05Z",
        user_id=user_id,
        customer_id=customer_id,
    )


async def test_the_token_is_read_once_and_again_when_it_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    me, other = str(uuid.uuid4()), str(uuid.uuid4())
    manager = RealtimeMessagingManager("http://127.0.0.1:9", "anon", access_token=_staff_token(me))
    mine, theirs = _typing(user_id=me), _typing(user_id=other)
    for _ in range(100):
        assert manager._own_typing(mine)
        assert not manager._own_typing(theirs)
        assert not manager._own_typing(_typing(customer_id=me))
    assert len(decoded) == 1
    # A new token (set_auth assigns it): the answer follows it.
    manager.access_token = _staff_token(other)
    assert manager._own_typing(theirs)
    assert not manager._own_typing(mine)
    assert len(decoded) == 2
    manager.access_token = "pt_portal-token"  # a customer's opaque portal token
    assert manager._own_typing(_typing(customer_id=me))
    assert not manager._own_typing(mine)
    manager.access_token = None
    assert not manager._own_typing(mine)
    assert len(decoded) == 2
