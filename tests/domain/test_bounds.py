"""The JSON depth bound, and the limits as the protocol core applies them."""

from __future__ import annotations

import random
from typing import Any

import orjson

from realtime_messaging.domain.bounds import (
    InputLimits,
    may_nest_deeper,
    metadata_problem,
    too_deep,
)
from realtime_messaging.protocol.connection import ServerConnection
from realtime_messaging.protocol.events import BadPush, BroadcastReceived, JoinRefused
from realtime_messaging.protocol.frames import Vsn, encode_user_broadcast_push


def _nest(depth: int, *, arrays: bool = False) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [1, value] if arrays else {"k": value, "s": 1}
    return value


def test_depth_counts_arrays_and_objects_and_stops_at_the_limit() -> None:
    assert not too_deep("scalar", 0)
    assert too_deep({}, 0) and not too_deep({}, 1)
    for arrays in (False, True):
        assert not too_deep(_nest(32, arrays=arrays), 32)
        assert too_deep(_nest(33, arrays=arrays), 32)
    # Deep siblings count, shallow ones do not hide them; no recursion, whatever the depth.
    assert too_deep({"a": 1, "b": [_nest(32)]}, 32)
    assert too_deep(_nest(100_000, arrays=True), 32)


def test_the_bracket_count_never_lets_a_deep_value_pass() -> None:
    """The cheap pre-check of socket frames: when it says a text cannot nest past the limit,
    the walk would have agreed, for values of every depth and for brackets inside strings."""
    rng = random.Random(7)
    for _ in range(500):
        depth = rng.randrange(0, 12)
        value = _nest(depth, arrays=rng.random() < 0.5)
        if rng.random() < 0.5:
            value = {"text": "[{" * rng.randrange(0, 6), "v": value}
        for text in (orjson.dumps(value), orjson.dumps(value).decode()):
            for limit in range(0, 14):
                if too_deep(value, limit):
                    assert may_nest_deeper(text, limit)
    assert not may_nest_deeper('{"a": [1, 2]}', 2) and may_nest_deeper('{"a": [[1]]}', 2)
    assert may_nest_deeper(b'{"a": "[[["}', 2)  # cautious: a walk then decides


def test_metadata_is_bounded_in_bytes() -> None:
    limits = InputLimits(max_metadata_bytes=20)
    assert metadata_problem({"a": "x" * 10}, limits) is None
    assert metadata_problem({"a": "x" * 20}, limits) == "metadata is larger than 20 bytes"


def test_the_protocol_core_refuses_deep_pushes_and_joins_with_a_reply() -> None:
    conn = ServerConnection(Vsn.V2, InputLimits(max_json_depth=4, max_bindings_per_join=2))
    join = conn.receive_text('[ "1", "1", "realtime:t", "phx_join", {"config": {"a": [[[1]]]}}]')
    assert isinstance(join, JoinRefused)
    assert join.reason == "InvalidJoinPayload: JSON nests deeper than 4 levels"
    binding = {"event": "*", "table": "customer_messages"}
    many = conn.receive_text(
        '["1", "1", "realtime:t", "phx_join", {"config": {"postgres_changes": '
        f"[{_json(binding)}, {_json(binding)}, {_json(binding)}]}}}}]"
    )
    assert isinstance(many, JoinRefused)
    assert many.reason == "TooManyBindings: at most 2 postgres_changes bindings per join"
    conn.joined["realtime:t"] = "1"
    push = conn.receive_text(
        '["1", "2", "realtime:t", "broadcast", {"event": "e", "payload": [[[[1]]]]}]'
    )
    assert isinstance(push, BadPush) and push.reason == "JSON nests deeper than 4 levels"
    ok = conn.receive_text(
        '["1", "3", "realtime:t", "broadcast", {"event": "e", "payload": [[1]]}]'
    )
    assert isinstance(ok, BroadcastReceived)
    deep_binary = encode_user_broadcast_push("1", "4", "realtime:t", "e", b"[[[[[1]]]]]")
    refused = conn.receive_binary(deep_binary)
    assert isinstance(refused, BadPush) and refused.reason == "JSON nests deeper than 4 levels"
    flat_binary = encode_user_broadcast_push("1", "5", "realtime:t", "e", b"[[[[1]]]]")
    assert isinstance(conn.receive_binary(flat_binary), BroadcastReceived)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
