"""Work a long-lived process repeats until it stops: the leader's reputation refresh, chart totals,
recommendation model and partition upkeep, the label store's expiry sweeps. One loop for all: run,
rest for as long as the result says (or a fixed time after a failure, which is logged and never
ends the loop), until the task is cancelled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def repeat(what: str, work: Callable[[], Awaitable[T]], rest: Callable[[T], float],
                 after_failure: float | Callable[[], float], logger: logging.Logger, first_wait: float = 0.0) -> None:
    """Await ``work()`` after ``first_wait`` seconds, then again ``rest(result)`` seconds after each
    success, or ``after_failure`` seconds (or what it returns, when callable) after a failure
    (logged on ``logger`` as "``what`` failed", with the traceback), until cancelled. An error raised while the task is being
    cancelled (work interrupted on the way out) ends it as the cancellation it is. Never returns."""
    await asyncio.sleep(first_wait)
    while True:
        try:
            wait = rest(await work())
        except Exception:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # stopping: an error raised on the way out
                raise asyncio.CancelledError from None
            wait = after_failure() if callable(after_failure) else after_failure
            logger.exception("%s failed; trying again in %.0f s", what, wait)
        await asyncio.sleep(wait)
