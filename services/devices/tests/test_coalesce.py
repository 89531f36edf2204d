"""Coalesced calls: whoever asks gets the result of a call that started after it
asked; those who ask together share one call."""

from __future__ import annotations

import asyncio

from clarin_devices.worker.coalesce import Coalesced


async def test_callers_share_a_call_that_starts_after_they_asked() -> None:
    started: list[int] = []
    running = [asyncio.Event(), asyncio.Event()]
    release = [asyncio.Event(), asyncio.Event()]

    async def call() -> int:
        n = len(started)
        started.append(n)
        running[n].set()
        await release[n].wait()
        return n

    shared = Coalesced(call, "test")
    first = asyncio.create_task(shared())
    await running[0].wait()  # the first call is under way
    # asked while it runs: they need a call that starts after them, the next one
    later = [asyncio.create_task(shared()) for _ in range(5)]
    await asyncio.sleep(0)
    release[0].set()
    assert await first == 0
    await running[1].wait()
    release[1].set()
    assert await asyncio.gather(*later) == [1] * 5
    assert started == [0, 1]  # six callers, two calls


async def test_a_failed_call_fails_its_callers_and_the_next_call_runs() -> None:
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("NATS is down")
        return "ok"

    shared = Coalesced(call, "test")
    results = await asyncio.gather(shared(), shared(), return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    assert await shared() == "ok"
    assert calls == 2
