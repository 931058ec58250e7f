"""The API tests' HTTP client fixture, for the /rest/v1 tests."""

from tests.api.conftest import http

__all__ = ["http"]
