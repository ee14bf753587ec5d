"""XRPC plumbing (atproto XRPC spec): errors as ``{"error", "message"}`` JSON, parameters decoded
and validated against the query's lexicon, and opaque pagination cursors."""

from __future__ import annotations

import base64
import json
from typing import Any

from lexrpc.base import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from openmusic.lexicons import validator


class XrpcError(Exception):
    """An XRPC error response: HTTP ``status``, ``error`` name (e.g. ``InvalidRequest``), ``message``."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.error, "message": self.message}, status_code=self.status)


def invalid(message: str) -> XrpcError:
    """A 400 ``InvalidRequest``."""
    return XrpcError(400, "InvalidRequest", message)


def not_found(error: str, message: str) -> XrpcError:
    """A 400 with a lexicon-declared error name (XRPC uses 400 for declared query errors)."""
    return XrpcError(400, error, message)


def parse_params(nsid: str, request: Request) -> dict[str, Any]:
    """Decode and validate ``request``'s query string against ``nsid``'s lexicon ``parameters``.

    Unknown parameters are ignored; defaults from the lexicon are filled in.
    Raises ``XrpcError`` (400 ``InvalidRequest``).
    """
    lex = validator()
    schema = lex.defs[nsid].get("parameters") or {}
    props = schema.get("properties", {})
    pairs = [(k, v) for k, v in request.query_params.multi_items() if k in props]
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


def encode_cursor(*values: Any) -> str:
    """Opaque cursor for keyset pagination (base64url of the sort key)."""
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, arity: int) -> list[Any] | None:
    """Inverse of ``encode_cursor``; None for no cursor. Raises ``XrpcError`` on a malformed one."""
    if not cursor:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid("malformed cursor") from exc
    if not isinstance(values, list) or len(values) != arity:
        raise invalid("malformed cursor")
    return values
