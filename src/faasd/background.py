"""Work that must run to its end after the call that started it (teardowns answered before they finish).

A task the event loop holds only weakly can be collected mid-way; :class:`Background` keeps each one
referenced until it is done, and :meth:`Background.drain` waits for all of them, including those started
while it waits. Never cancelled: a half-done teardown would outlive its owner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self) -> None:
        """Return once every task spawned here, before or during the wait, has ended."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))
