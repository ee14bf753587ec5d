"""Notifications (issue 13): ``fm.openmusic.notification.*``, for the signed-in caller (service auth)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from appview.xrpc import XrpcError

if TYPE_CHECKING:
    from appview.deps import AppViewDeps

NOTIFICATION_METHODS: dict[str, object] = {}


async def notification_method(rt: AppViewDeps, nsid: str, request: Request) -> Response:
    """Serve one ``fm.openmusic.notification.*`` method (not built yet)."""
    return XrpcError(501, "MethodNotImplemented", f"{nsid} is not served here").response()
