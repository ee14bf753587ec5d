"""Media types of blobs, as creators declare them in their records (``mimeType``): one strict parser,
used when a record is indexed and again when its blob is served. A declared type is only ever echoed
to browsers after it parsed as a single ``type/subtype`` of the kind the route serves."""

from __future__ import annotations

import re

#: ``type "/" subtype``, each an RFC 9110 token (no parameters, spaces or commas); RFC 6838 caps
#: each name at 127 characters.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,127}"
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}")
#: Image types served as images: raster formats only (never ``image/svg+xml``: SVG runs script).
RASTER_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif"})
#: What a blob whose declared type is not allowed is served as (with ``Content-Disposition: attachment``).
FALLBACK = "application/octet-stream"
KINDS = ("audio", "image")


def parse_media_type(value: object) -> str | None:
    """``value`` as a lower-cased ``type/subtype`` when it is exactly one media type without
    parameters (``"audio/MPEG"`` -> ``"audio/mpeg"``), else None (``"audio/x,text/html"``,
    ``"audio/mpeg; codecs=x"``, ``"audio/ mpeg"``, non-strings)."""
    if not isinstance(value, str) or _MEDIA_TYPE.fullmatch(value) is None:
        return None
    return value.lower()


def blob_media_type(value: object, kind: str) -> str | None:
    """The parsed media type of a ``kind`` blob (``"audio"`` or ``"image"``) when that kind may be
    served as it, else None. Audio: any ``audio/*`` except XML-based subtypes (``+xml``: browsers
    render XML documents, script included). Image: ``RASTER_IMAGES`` only.

    Raises ``ValueError`` for an unknown ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"unknown blob kind {kind!r}")
    mime = parse_media_type(value)
    if mime is None:
        return None
    if kind == "audio":
        return mime if mime.startswith("audio/") and not mime.endswith("+xml") else None
    return mime if mime in RASTER_IMAGES else None
