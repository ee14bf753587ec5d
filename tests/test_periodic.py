"""``core.periodic.repeat``: the loop the leader's periodic work and the label sweeps share."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from core import periodic


async def test_repeat_rests_as_told_and_survives_failures(caplog):
    runs: list[float] = []
    rests: list[object] = []
    loop = asyncio.get_running_loop()

    async def work() -> float:
        runs.append(loop.time())
        if len(runs) == 2:
            raise RuntimeError("boom")
        return 0.01 * len(runs)

    def rest(result: float) -> float:
        rests.append(result)
        return result
    task = asyncio.create_task(periodic.repeat("the test work", work, rest, 0.02, logging.getLogger("t"),
                                               first_wait=0.05))
    started = loop.time()
    with caplog.at_level(logging.ERROR):
        while len(runs) < 4:
            await asyncio.sleep(0.005)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert runs[0] - started >= 0.04  # first_wait
    assert rests[:2] == [0.01, 0.03]  # the failed run's result was never asked for
    assert runs[2] - runs[1] >= 0.015  # after_failure
    assert "the test work failed; trying again in 0 s" in caplog.text and "RuntimeError: boom" in caplog.text


async def test_an_error_while_stopping_is_the_cancellation():
    """Work interrupted on the way out may raise something else: the task still ends cancelled,
    instead of logging it and sleeping on."""
    entered = asyncio.Event()

    async def work() -> float:
        entered.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise OSError("the connection closed under it") from None
        return 1.0
    task = asyncio.create_task(periodic.repeat("w", work, lambda r: r, 1.0, logging.getLogger("t")))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
