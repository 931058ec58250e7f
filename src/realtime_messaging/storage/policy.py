"""What may be uploaded and how it is served back: content types, sniffing, filenames.

Nothing a client declares is trusted for a path or a response header. The declared type is
checked against the first bytes (images, PDF and office files have signatures); the filename is
reduced to a harmless display name and only ever sent back inside ``Content-Disposition:
attachment`` (RFC 6266, with the RFC 8187 ``filename*`` form for non-ASCII names).
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

#: Allowed by default (``RTM_UPLOAD_CONTENT_TYPES`` replaces the list): raster images, PDF,
#: plain text and CSV, and the common office formats. No SVG or HTML: a browser runs scripts in
#: them.
DEFAULT_CONTENT_TYPES: tuple[str, ...] = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "text/plain",
    "text/csv",
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.oasis.opendocument.presentation",
)

#: Bytes of the start of a file that :func:`sniff` needs.
SNIFF_BYTES = 16

_IMAGES = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
}
_ZIP = b"PK\x03\x04"
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
#: Types whose content must start with one of these signatures.
_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    **_IMAGES,
    "application/pdf": (b"%PDF-",),
    "application/msword": (_OLE,),
    "application/vnd.ms-excel": (_OLE,),
    "application/vnd.ms-powerpoint": (_OLE,),
}
#: Types served back as themselves (with nosniff and attachment disposition they are inert);
#: every other one is served as application/octet-stream.
_SERVED_AS_IS = {"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf"}
_TOKEN = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


class Refused(ValueError):
    """The content is not what may be uploaded (a 415)."""


def normalise_type(declared: str | None) -> str:
    """The bare ``type/subtype`` of a Content-Type header, lower case, parameters dropped."""
    bare = (declared or "").split(";", 1)[0].strip().lower()
    return bare if _TOKEN.fullmatch(bare) else "application/octet-stream"


def sniff(head: bytes) -> str | None:
    """The image type the bytes say they are, if any (WEBP: RIFF....WEBP)."""
    for kind, signatures in _IMAGES.items():
        if head.startswith(signatures):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def check_content(declared: str, head: bytes, allowed: tuple[str, ...]) -> str:
    """The type to record for a file declared ``declared`` that starts with ``head``.

    An image is what its bytes say, whatever was declared (a PNG sent as JPEG is a PNG); a
    declared image or signed format whose bytes do not match is refused, and so is text with
    NUL bytes (a binary in disguise)."""
    found = sniff(head)
    kind = found if found is not None and declared.startswith("image/") else declared
    if kind not in allowed:
        raise Refused(f"content type {kind} is not accepted")
    signatures = _SIGNATURES.get(kind)
    if signatures is not None and not head.startswith(signatures):
        raise Refused(f"the content is not {kind}")
    if kind == "image/webp" and found != "image/webp":
        raise Refused("the content is not image/webp")
    if kind.startswith("application/vnd.openxmlformats") or kind.startswith(
        "application/vnd.oasis"
    ):
        if not head.startswith(_ZIP):
            raise Refused(f"the content is not {kind}")
    if kind.startswith("text/") and b"\x00" in head:
        raise Refused(f"the content is not {kind}")
    return kind


def served_type(stored: str) -> str:
    """The Content-Type a download is sent with: the stored type only where that is inert."""
    if stored in _SERVED_AS_IS:
        return stored
    if stored.startswith("text/"):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


def display_name(name: str | None, *, fallback: str = "attachment") -> str:
    """A filename to show and to suggest on download: the last path component, NFC, without
    control or separator characters, at most 200 characters; ``fallback`` when nothing is left."""
    text = unicodedata.normalize("NFC", name or "")
    text = re.split(r"[/\\]", text)[-1]
    text = "".join(
        c for c in text if unicodedata.category(c)[0] != "C" and c not in '"<>:|?*'
    ).strip(" .")
    return text[:200] or fallback


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII ``filename`` fallback and the exact ``filename*``."""
    safe = display_name(name)
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '\\"%;' else "_" for c in safe)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(safe, safe='')}"
