"""Spare sandboxes of ephemeral functions on real runc sandboxes: after an invocation's start the function's
next sandbox is created and not started; the next invocation starts it (a fresh sandbox all the same);
a changed secret or configuration is never served by an older spare; updating or deleting the function and
closing the platform destroy it (the fixture's leak check covers every sandbox the platform made)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable

import pytest
from platform_real_helpers import runc_containers

from faasd.platform.core import Platform
from faasd.platform.functions import FunctionSpec
from faasd.platform.invocation import Invocation

pytestmark = pytest.mark.integration


async def until(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def states(p: Platform, name: str) -> dict[str, str]:
    """The function's runc containers and their status."""
    out = {}
    for cid in runc_containers(p.settings):
        if name in cid:
            state = subprocess.run(
                ["runc", "--root", str(p.settings.runc_root), "state", cid], capture_output=True, text=True
            )
            out[cid] = json.loads(state.stdout)["status"] if state.returncode == 0 else "gone"
    return {k: v for k, v in out.items() if v != "gone"}


async def invoke(p: Platform, name: str, body: bytes) -> dict[str, object]:
    out = await p.executions.invoke(name, Invocation(body=body))
    assert out.status == "succeeded" and out.cold, out
    result = json.loads(out.body)
    assert isinstance(result, dict)
    return result


async def test_ephemeral_functions_start_from_a_spare_sandbox(
    real_platform: Platform, unique_id: str
) -> None:
    p = real_platform
    assert p.runner.spares is not None
    name = unique_id
    p.secrets.create("api-token", b"one")
    spec = FunctionSpec(
        name=name, image=f"{unique_id}:1", mode="ephemeral", env={"GREETING": "a"}, secrets=["api-token"]
    )
    await p.deploy(spec)
    assert await invoke(p, name, b"1") == {"echo": "1", "secret": "one", "env": "a"}
    await until(lambda: p.runner.spares is not None and p.runner.spares.count() == 1)
    await p.runner.settled(name)  # the first invocation's sandbox is torn down: only the spare is left
    spare = states(p, name)
    assert list(spare.values()) == ["created"], spare  # created, never started

    # the next invocation starts that spare, and the one after it gets a new spare
    assert await invoke(p, name, b"2") == {"echo": "2", "secret": "one", "env": "a"}
    await until(lambda: p.runner.spares is not None and p.runner.spares.count() == 1)
    await p.runner.settled(name)
    after = states(p, name)
    assert list(after.values()) == ["created"] and not set(after) & set(spare), (spare, after)

    # a secret changed after the spare was made: the spare is not used, the new value is seen
    p.secrets.update("api-token", b"two")
    assert (await invoke(p, name, b"3"))["secret"] == "two"

    # an update drops the spare; the updated function's invocations see the new configuration
    await until(lambda: p.runner.spares is not None and p.runner.spares.count() == 1)
    await p.update(name, spec.model_copy(update={"env": {"GREETING": "b"}}))
    assert p.runner.spares.count() == 0
    assert (await invoke(p, name, b"4"))["env"] == "b"

    # deleting the function destroys its spare: nothing of it is left
    await until(lambda: p.runner.spares is not None and p.runner.spares.count() == 1)
    await p.delete(name)
    await p.runner.settled(name)
    assert states(p, name) == {}


async def test_no_spares_when_turned_off(real_platform: Platform, unique_id: str) -> None:
    p = real_platform
    assert p.runner.spares is not None
    p.runner.spares.ttl_s = 0  # what Settings.ephemeral_spare_ttl_s = 0 leaves (no Spares at all)
    await p.deploy(FunctionSpec(name=unique_id, image=f"{unique_id}:1", mode="ephemeral"))
    await invoke(p, unique_id, b"x")
    await p.runner.settled(unique_id)
    assert p.runner.spares.count() == 0 and states(p, unique_id) == {}


async def test_closing_the_runner_destroys_the_spare(real_platform: Platform, unique_id: str) -> None:
    p = real_platform
    await p.deploy(FunctionSpec(name=unique_id, image=f"{unique_id}:1", mode="ephemeral"))
    await invoke(p, unique_id, b"x")
    await until(lambda: p.runner.spares is not None and p.runner.spares.count() == 1)
    await p.runner.close()  # what the platform's close does first for functions (the fixture closes it too)
    assert states(p, unique_id) == {}
