"""Bounds on what clients send, shared by every door (HTTP bodies, RPC arguments, socket frames).

Why a depth bound besides the byte bounds: a JSON document of a few hundred bytes can nest a few
hundred levels, which the JSON encoder refuses (orjson stops at 254) and recursive code trips
over. A value that nests deeper than ``max_json_depth`` is refused where it comes in, so nothing
deeper is ever stored, relayed or re-encoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class InputLimits:
    """The limits a client meets on every path (docs/realtime.md and docs/api.md list them)."""

    #: Levels of arrays and objects a JSON value may nest (``RTM_MAX_JSON_DEPTH``).
    max_json_depth: int = 32
    #: postgres_changes bindings in one join (``RTM_MAX_BINDINGS_PER_JOIN``).
    max_bindings_per_join: int = 100
    #: postgres_changes bindings across a socket's channels (``RTM_MAX_BINDINGS_PER_SOCKET``).
    max_bindings_per_socket: int = 500
    #: Characters of one postgres_changes filter.
    max_filter_length: int = 1000
    #: Bytes of presence metadata, tracked over the socket or set over HTTP and RPC, as JSON
    #: (``RTM_MAX_METADATA_BYTES``).
    max_metadata_bytes: int = 8192


#: The defaults, for callers that are given no limits of their own.
DEFAULT_LIMITS = InputLimits()


def too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` (as decoded from JSON) nests more than ``limit`` arrays and objects.

    A scalar has depth 0, ``[]`` and ``{}`` depth 1. Iterative, so hostile input cannot exhaust
    the stack; it stops at the first container past the limit.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > limit:
            return True
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth))
    return False


def may_nest_deeper(text: str | bytes, limit: int) -> bool:
    """Whether JSON ``text`` could nest more than ``limit`` levels: it cannot when it holds no
    more opening brackets than that (brackets inside strings only err on the side of a walk).
    Counting is a C loop over the bytes, far cheaper than :func:`too_deep` on the decoded value,
    and nearly every frame a client sends is shallow."""
    if isinstance(text, str):
        return text.count("[") + text.count("{") > limit
    return text.count(b"[") + text.count(b"{") > limit


def depth_message(limit: int) -> str:
    return f"JSON nests deeper than {limit} levels"


def metadata_problem(value: Any, limits: InputLimits) -> str | None:
    """Why presence metadata (any JSON value within the depth limit) is refused, or None."""
    if len(orjson.dumps(value)) > limits.max_metadata_bytes:
        return f"metadata is larger than {limits.max_metadata_bytes} bytes"
    return None
