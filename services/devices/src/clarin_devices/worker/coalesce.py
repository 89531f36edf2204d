"""One call answering everyone who asked before it started.

A worker connecting thousands of devices would otherwise make the same request
once per device at the same moment: confirm its new subscriptions (two PINGs
each) or read which send queues hold messages. :class:`Coalesced` runs the call
once for all who are waiting, and again for those who asked while it ran: each
caller gets the result of a call that *started after it asked*, so what it
needed to be seen (a subscription sent, a message stored) is seen, exactly as
with a call of its own.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from nats.aio.client import Client as NatsClient

from clarin_common.nats import confirm_subscriptions

T = TypeVar("T")


class Coalesced(Generic[T]):
    def __init__(self, call: Callable[[], Awaitable[T]], name: str) -> None:
        self._call = call
        self._name = name
        # the call that has not started yet, shared by whoever asks before it does
        self._next: asyncio.Future[T] | None = None
        self._runner: asyncio.Task[None] | None = None

    async def __call__(self) -> T:
        future = self._next
        if future is None:
            future = self._next = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)
            if self._runner is None or self._runner.done():
                self._runner = asyncio.create_task(self._run(), name=self._name)
        return await asyncio.shield(future)

    async def _run(self) -> None:
        while (future := self._next) is not None:
            self._next = None  # who asks from now on waits for the next call
            try:
                result = await self._call()
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a shared call's failure seen (each waiter gets it raised)."""
    if not future.cancelled():
        future.exception()


_confirmations: weakref.WeakKeyDictionary[NatsClient, Coalesced[None]] = weakref.WeakKeyDictionary()


async def confirm_subscriptions_together(nc: NatsClient) -> None:
    """:func:`clarin_common.nats.confirm_subscriptions`, one round of PINGs for
    every subscription made on ``nc`` before the round starts."""
    confirm = _confirmations.get(nc)
    if confirm is None:

        async def call() -> None:
            await confirm_subscriptions(nc)

        confirm = _confirmations[nc] = Coalesced(call, "confirm-subscriptions")
    await confirm()
