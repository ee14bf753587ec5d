"""Playlists (issue 13): ``fm.openmusic.catalog.getPlaylist`` and friends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from appview.views import ViewContext

Handler = Callable[[ViewContext, dict[str, Any]], Awaitable[dict[str, Any]]]

PLAYLIST_QUERIES: dict[str, Handler] = {}
