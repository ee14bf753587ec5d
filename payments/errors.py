"""Errors of the payment procedures."""

from __future__ import annotations


class PaymentError(Exception):
    """A payment call that cannot be done: XRPC ``error`` name, HTTP ``status``, ``str()`` says why."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
