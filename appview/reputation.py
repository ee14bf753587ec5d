"""Reputation-weighted votes (issue 13): ``fm.openmusic.social.getVoteBreakdown``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from appview.views import ViewContext

Handler = Callable[[ViewContext, dict[str, Any]], Awaitable[dict[str, Any]]]

REPUTATION_QUERIES: dict[str, Handler] = {}
