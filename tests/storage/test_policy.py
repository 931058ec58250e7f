"""What may be uploaded, and what a download says about itself."""

from __future__ import annotations

import pytest

from realtime_messaging.storage.policy import (
    DEFAULT_CONTENT_TYPES,
    Refused,
    check_content,
    content_disposition,
    display_name,
    normalise_type,
    served_type,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8


def test_images_are_what_their_bytes_say() -> None:
    assert check_content("image/jpeg", PNG, DEFAULT_CONTENT_TYPES) == "image/png"
    with pytest.raises(Refused):
        check_content("image/png", b"<html><script>", DEFAULT_CONTENT_TYPES)
    with pytest.raises(Refused):
        check_content("application/pdf", b"<html><script>", DEFAULT_CONTENT_TYPES)
    with pytest.raises(Refused):
        check_content("text/plain", b"MZ\x90\x00\x03\x00", DEFAULT_CONTENT_TYPES)
    with pytest.raises(Refused):
        check_content("image/svg+xml", b"<svg onload=alert(1)>", DEFAULT_CONTENT_TYPES)
    assert check_content("text/plain", b"hello", DEFAULT_CONTENT_TYPES) == "text/plain"


def test_declared_types_are_reduced_to_a_bare_token() -> None:
    assert normalise_type("Text/Plain; charset=utf-8") == "text/plain"
    assert normalise_type("text/html\r\nX-Evil: 1") == "application/octet-stream"
    assert normalise_type(None) == "application/octet-stream"


def test_downloads_never_carry_an_active_type() -> None:
    assert served_type("image/png") == "image/png"
    assert served_type("text/csv") == "text/plain; charset=utf-8"
    assert served_type("application/msword") == "application/octet-stream"
    assert served_type("text/html") == "text/plain; charset=utf-8"


def test_filenames_lose_paths_controls_and_quotes() -> None:
    assert display_name("../../etc/passwd") == "passwd"
    assert display_name("..\\..\\boot.ini") == "boot.ini"
    assert display_name("a\r\nSet-Cookie: x") == "aSet-Cookie x"
    assert display_name("..") == "attachment"
    assert display_name(None) == "attachment"
    assert len(display_name("x" * 1000)) == 200
    header = content_disposition('naïve "quote";.pdf')
    assert header == (
        "attachment; filename=\"na_ve quote_.pdf\"; filename*=UTF-8''na%C3%AFve%20quote%3B.pdf"
    )
    assert "\r" not in content_disposition("a\rb") and "\n" not in content_disposition("a\nb")
