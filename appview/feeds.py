"""Music feeds for clients (issue 13): ``fm.openmusic.feed.getFeed``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from appview.views import ViewContext

Handler = Callable[[ViewContext, dict[str, Any]], Awaitable[dict[str, Any]]]

FEED_QUERIES: dict[str, Handler] = {}
