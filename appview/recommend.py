"""Recommendations (issue 13): more like this, for you."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from appview.views import ViewContext

Handler = Callable[[ViewContext, dict[str, Any]], Awaitable[dict[str, Any]]]

RECOMMEND_QUERIES: dict[str, Handler] = {}
