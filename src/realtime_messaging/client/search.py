"""What the SDK's search and conversation list return: typed results of ``GET /api/search``
and the query strings of the inbox filters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One message found: where it is, its rank, and a snippet.

    ``snippet`` is HTML: the message's text escaped, the matched words in ``<mark>``.
    """

    message_id: str
    conversation_id: str
    sender_type: str
    sender_id: str
    created_at: str
    rank: float
    snippet: str

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> SearchResult:
        return cls(
            message_id=str(data["messageId"]),
            conversation_id=str(data["conversationId"]),
            sender_type=str(data["senderType"]),
            sender_id=str(data["senderId"]),
            created_at=str(data["createdAt"]),
            rank=float(data["rank"]),
            snippet=str(data["snippet"]),
        )


def query_string(**params: object) -> str:
    """``?a=1&b=x`` of the parameters that are set (booleans as true/false), or ``""``."""
    given = {
        name: ("true" if value else "false") if isinstance(value, bool) else str(value)
        for name, value in params.items()
        if value is not None
    }
    return f"?{urlencode(given)}" if given else ""
