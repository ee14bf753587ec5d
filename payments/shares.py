"""Dividing money by weights without creating or losing a cent (largest-remainder method)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def allocate(amount: int, weights: Sequence[tuple[K, int]]) -> list[tuple[K, int]]:
    """Share ``amount`` (minor units, >= 0) in proportion to integer ``weights`` [(key, weight >= 0)]:
    each key gets the floor of its exact share, and the units left over go one each to the largest
    remainders, ties broken by list order (so callers sort ``weights`` for a deterministic result).
    The parts sum to ``amount`` exactly. Raises ``ValueError`` when no weight is positive (and
    ``amount`` is not 0) or a weight is negative."""
    if any(w < 0 for _, w in weights):
        raise ValueError("weights must not be negative")
    total = sum(w for _, w in weights)
    if total == 0:
        if amount:
            raise ValueError("nothing to share by: every weight is 0")
        return [(k, 0) for k, _ in weights]
    parts = [(k, amount * w // total, amount * w % total, i) for i, (k, w) in enumerate(weights)]
    left = amount - sum(p[1] for p in parts)
    extra = {p[3] for p in sorted(parts, key=lambda p: (-p[2], p[3]))[:left]}
    return [(k, share + (1 if i in extra else 0)) for k, share, _, i in parts]
