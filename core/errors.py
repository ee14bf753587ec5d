"""Errors shared by the layers (core): raised below, handled above."""

from __future__ import annotations


class RetryLater(Exception):
    """Raised by a sink when a batch cannot be applied now but may be later (e.g. a DID document
    could not be fetched): the firehose consumer reconnects with backoff and replays from its cursor."""


class TransientIdentityError(RetryLater):
    """A signing key could not be fetched for now (network error, PLC 5xx): retry the batch later."""
