"""Background: tasks kept until done; drain waits for those spawned while it waits too."""

from __future__ import annotations

import asyncio

import pytest

from faasd.background import Background

pytestmark = pytest.mark.unit


async def test_drain_waits_for_every_task_even_those_spawned_meanwhile() -> None:
    bg = Background()
    ended: list[str] = []

    async def second() -> None:
        await asyncio.sleep(0.01)
        ended.append("second")

    async def first() -> None:
        await asyncio.sleep(0.01)
        bg.spawn(second())  # started while drain() waits
        ended.append("first")

    bg.spawn(first())
    await bg.drain()
    assert ended == ["first", "second"]
    await bg.drain()  # nothing left: returns at once
