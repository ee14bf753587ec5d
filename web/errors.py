"""The web app's error type: what stops a request with an error page."""

from __future__ import annotations


class PageError(Exception):
    """Stop a request with an error page (``status``: HTTP status, ``title``, ``message``: shown to the person)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(title)
        self.status, self.title, self.message = status, title, message
