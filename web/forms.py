"""Reading multipart forms with files safely (the profile's avatar, the studio's audio and artwork):
the body is capped before it is read, parsed by Starlette's ``request.form`` (python-multipart) with
limits on fields, files and part sizes, and a file's type is found from its bytes, never from what
the browser declared."""

from __future__ import annotations

import io

from PIL import Image
from python_multipart.multipart import parse_options_header
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Message

from core.lexicons import validator

#: A body over the cap is still read and thrown away up to this many bytes, so that the browser
#: gets our page rather than a reset connection; past it the connection is closed.
DRAIN_LIMIT = 16 * 1024 * 1024
#: Largest image, pixels (the file's bytes are capped by each lexicon's ``maxSize``).
MAX_PIXELS = 4096 * 4096
IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def blob_rules(collection: str, name: str) -> tuple[int, list[str]]:
    """(maxSize bytes, accept) of the blob field ``name`` of the record ``collection``, from its lexicon."""
    schema = validator().defs[collection]["record"]["properties"][name]
    return int(schema["maxSize"]), list(schema["accept"])


async def read_capped(request: Request, cap: int) -> bytes | None:
    """The request body, or None when it is over ``cap`` bytes (declared or read): then at most
    ``cap`` bytes were kept, and the rest is read and dropped up to ``DRAIN_LIMIT``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        if int(declared) <= DRAIN_LIMIT:
            await _drain(request, 0)
        return None
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > cap:
            await _drain(request, len(body) + len(chunk))
            return None
        body += chunk
    return bytes(body)


async def _drain(request: Request, seen: int) -> None:
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > DRAIN_LIMIT:
            return


async def read_form(request: Request, body: bytes, files: tuple[str, ...], *, max_fields: int,
                    max_part_size: int) -> tuple[dict[str, list[str]], dict[str, bytes]]:
    """``body`` (``request``'s, read by ``read_capped``) parsed by ``request.form``: text fields
    (``name -> values``) and the bytes of the first file of each name in ``files`` (b"" for none: a
    file input left empty is sent as an empty file). Raises ``HTTPException`` 400 for a body
    python-multipart cannot read, over ``max_fields`` text fields or ``len(files)`` files, with a text
    field over ``max_part_size`` bytes, or cut short."""
    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    # python-multipart's finalize() does not yet check that the closing boundary came (see its
    # MultipartParser.finalize), so a body cut short would read as a shorter form: refuse it here.
    boundary = parse_options_header(request.headers.get("content-type"))[1].get(b"boundary", b"")
    if not boundary or b"\r\n--" + boundary + b"--" not in b"\r\n" + body:
        raise HTTPException(400, "multipart body without its closing boundary")
    async with Request(request.scope, replay).form(max_files=len(files), max_fields=max_fields,
                                                   max_part_size=max_part_size) as form:
        fields = {name: [v for v in form.getlist(name) if isinstance(v, str)] for name in form}
        found: dict[str, bytes] = {}
        for name in files:
            uploads = [f for f in form.getlist(name) if isinstance(f, UploadFile)]
            found[name] = await uploads[0].read() if uploads else b""
        return fields, found


def image_type(data: bytes) -> str | None:
    """The media type of ``data`` when it is a PNG, JPEG or WebP image Pillow can read (header and
    structure checked, not decoded) of at most ``MAX_PIXELS``; else None. Never trusts a declared type."""
    try:
        with Image.open(io.BytesIO(data), formats=list(IMAGE_TYPES)) as img:
            fmt, (width, height) = img.format, img.size
            img.verify()
    except Exception:  # Pillow raises many kinds for bad input (SyntaxError, OSError, DecompressionBombError)
        return None
    if not fmt or width * height > MAX_PIXELS:
        return None
    return IMAGE_TYPES.get(fmt)
