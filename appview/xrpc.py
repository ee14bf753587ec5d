"""XRPC plumbing (atproto XRPC spec): errors as ``{"error", "message"}`` JSON, parameters decoded
and validated against the query's lexicon, opaque pagination cursors checked element by element,
request bodies bounded per route (``BodyLimit``), and HEAD answered like GET without a body."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from lexrpc.base import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.lexicons import validator


class XrpcError(Exception):
    """An XRPC error response: HTTP ``status``, ``error`` name (e.g. ``InvalidRequest``), ``message``."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message

    def response(self) -> JSONResponse:
        """This error as a JSON response."""
        return JSONResponse({"error": self.error, "message": self.message}, status_code=self.status)

    async def _send(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = self.response()
        if self.status == 413:
            response.headers["Connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


def invalid(message: str) -> XrpcError:
    """A 400 ``InvalidRequest``."""
    return XrpcError(400, "InvalidRequest", message)


def not_found(error: str, message: str) -> XrpcError:
    """A 400 with a lexicon-declared error name (XRPC uses 400 for declared query errors)."""
    return XrpcError(400, error, message)


def parse_params(nsid: str, request: Request) -> dict[str, Any]:
    """Decode and validate ``request``'s query string against ``nsid``'s lexicon ``parameters``
    (``validate_params``). Raises ``XrpcError`` (400 ``InvalidRequest``)."""
    return validate_params(nsid, request.query_params.multi_items())


def validate_params(nsid: str, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Decode and validate query ``pairs`` (name, text value) against ``nsid``'s lexicon ``parameters``.

    Unknown parameters are ignored; defaults from the lexicon are filled in. Other callers of the
    query handlers (the web app's pages) validate their parameters here too.
    Raises ``XrpcError`` (400 ``InvalidRequest``).
    """
    lex = validator()
    schema = lex.defs[nsid].get("parameters") or {}
    props = schema.get("properties", {})
    pairs = [(k, v) for k, v in pairs if k in props]
    try:
        params = lex.decode_params(nsid, pairs)
        for name, prop in props.items():
            if name not in params and "default" in prop:
                params[name] = prop["default"]
        lex.validate(nsid, "parameters", params)
    except (ValueError, ValidationError) as exc:
        msg = str(exc).replace(f"in {nsid}, ", "").replace(f"{nsid} parameters with value", "parameters")
        raise invalid(msg) from exc
    return params


#: Longest cursor accepted (characters of base64), and longest string element inside one.
MAX_CURSOR_CHARS = 1024
MAX_CURSOR_STR = 512
#: Range of integer cursor elements: SQLite's INTEGER (signed 64-bit).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def encode_cursor(*values: Any) -> str:
    """Opaque cursor for keyset pagination (base64url of the sort key)."""
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def _cursor_element(value: Any, kind: type | None) -> bool:
    """True when ``value`` is a well-formed cursor element of ``kind`` (``int`` within int64, ``str``
    of at most ``MAX_CURSOR_STR`` characters and valid UTF-8; None: either)."""
    if isinstance(value, int) and not isinstance(value, bool) and kind in (int, None):
        return INT64_MIN <= value <= INT64_MAX
    if isinstance(value, str) and kind in (str, None):
        if len(value) > MAX_CURSOR_STR:
            return False
        try:
            value.encode("utf-8")  # a lone surrogate ("\ud800" in the JSON) cannot reach SQLite
        except UnicodeEncodeError:
            return False
        return True
    return False


def decode_cursor(cursor: str | None, schema: int | Sequence[type]) -> list[Any] | None:
    """Inverse of ``encode_cursor``; None for no cursor.

    ``schema`` gives the type of each element in order: ``int`` (a signed 64-bit integer) or ``str``
    (at most ``MAX_CURSOR_STR`` characters). An int ``schema`` gives only the arity, each element then
    being either. Raises ``XrpcError`` (400 ``InvalidRequest``) on anything else, so a forged cursor
    never reaches SQLite.
    """
    if not cursor:
        return None
    kinds: list[type | None] = [None] * schema if isinstance(schema, int) else list(schema)
    if len(cursor) > MAX_CURSOR_CHARS:
        raise invalid("malformed cursor")
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise invalid("malformed cursor") from exc
    if (not isinstance(values, list) or len(values) != len(kinds)
            or not all(_cursor_element(v, k) for v, k in zip(values, kinds, strict=True))):
        raise invalid("malformed cursor")
    return values


def int_cursor(cursor: str | None) -> int | None:
    """A plain decimal cursor (e.g. ``getEarnings``' line id) -> int within int64, or None.
    Raises ``XrpcError`` (400 ``InvalidRequest``) on anything else."""
    if not cursor:
        return None
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 19) or int(cursor) > INT64_MAX:
        raise invalid("malformed cursor")
    return int(cursor)


def head_response(response: Response) -> Response:
    """``response`` as the answer to a HEAD request: the same status and headers (its
    ``Content-Length`` included), no body."""
    return Response(b"", status_code=response.status_code, headers=dict(response.headers))


class PayloadTooLarge(XrpcError):
    """The request body is larger than its route allows: 413 ``PayloadTooLarge``."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, "PayloadTooLarge", f"the request body is larger than this method takes ({limit} bytes)")


class BodyLimit:
    """ASGI wrapper giving a route its request-body limit, ``max_body`` bytes.

    A declared ``Content-Length`` above the limit is refused with 413 ``PayloadTooLarge`` before the
    handler runs. A body without one (chunked) is counted while the handler reads it: the read that
    crosses the limit raises ``PayloadTooLarge`` (an ``XrpcError``, so handlers answer it as such; when
    one does not, the wrapper answers 413). At most ``max_body`` plus one chunk is ever buffered.
    """

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the wrapped app on a ``receive`` that counts body bytes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = [v for k, v in scope.get("headers", []) if k.lower() == b"content-length"]
        if declared:
            if len(declared) > 1 or not declared[0].isdigit():
                await invalid("malformed Content-Length")._send(scope, receive, send)
                return
            if int(declared[0]) > self.max_body:
                await PayloadTooLarge(self.max_body)._send(scope, receive, send)
                return
        total = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_body:
                    raise PayloadTooLarge(self.max_body)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except PayloadTooLarge as exc:
            if started:
                raise
            await exc._send(scope, receive, send)
