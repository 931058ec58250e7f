"""The error a handler raises for what the client caused (the rate limiter raises it too)."""

from __future__ import annotations


class ApiError(Exception):
    """An error the client caused; becomes a 4xx with the envelope."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
