"""Direct function addresses on a real platform: an address on ``lo`` labelled ``lo:faas``, served by the
function's workers over a socket handed in with SCM_RIGHTS; reused after a restart, released on delete,
on shutdown, and after a crash (kill -9) and restart."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import pytest
from platform_real_helpers import build_function_image, direct_addresses_left

from faasd.config import Settings
from faasd.errors import InvalidInputError
from faasd.platform.addresses import parse_pool
from faasd.platform.core import Platform
from faasd.platform.functions import FunctionSpec
from faasd.platform.invocation import Invocation
from faasd.state import FunctionAddress
from faasd.testing.leaks import leak_checked_platform

pytestmark = pytest.mark.integration


def lo_faas() -> str:
    return subprocess.run(
        ["ip", "-4", "addr", "show", "dev", "lo", "label", "lo:faas"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def registry(p: Platform) -> dict[str, str]:
    with p.db.session() as s:
        return {r.function: r.address for r in s.query(FunctionAddress)}


async def test_direct_address_lifecycle(settings: Settings, unique_id: str, tmp_path: Path) -> None:
    store = build_function_image(settings, f"{unique_id}:1", tmp_path)
    async with leak_checked_platform(settings, store) as env:  # type: ignore[arg-type]
        p = env.platform
        fn = await p.deploy(
            FunctionSpec(name=unique_id, image=f"{unique_id}:1", scale={"min": 0, "max": 2})  # type: ignore[arg-type]
        )
        view = p.view(fn)
        address = view["address"]
        assert address is not None and address in {str(h) for h in parse_pool(settings.direct_pool).hosts()}
        assert view["direct_url"] == f"http://{address}/"
        assert f"inet {address}/32 scope host lo:faas" in lo_faas()
        assert registry(p) == {unique_id: address}
        # exec-mode and ephemeral functions get none
        other = await p.deploy(
            FunctionSpec(name=f"{unique_id}-e", image=f"{unique_id}:1", mode="ephemeral")  # type: ignore[arg-type]
        )
        assert p.view(other)["address"] is None

        # scale 0: the daemon sees the waiting connection and starts a worker, which accepts it
        assert p.runner.status(fn)["replicas"] == 0
        async with httpx.AsyncClient(base_url=view["direct_url"], timeout=60) as client:
            r = await client.post("/x", content=b"direct")
            assert r.status_code == 200 and r.json()["echo"] == "direct"
            # (the agent may answer before the pool has registered the worker as started)
            for _ in range(300):
                if p.runner.status(fn)["starting"] == 0:
                    break
                await asyncio.sleep(0.1)
            assert p.runner.status(fn)["replicas"] == 1
            for i in range(10):
                assert (await client.post("/", content=f"n{i}".encode())).json()["echo"] == f"n{i}"
            r = await client.post("/", content=b"boom")
            assert r.status_code == 500 and "boom requested" in r.text
        # the gateway path is unaffected and records executions as before
        out = await p.executions.invoke(unique_id, Invocation(body=b"gw"))
        assert out.status == "succeeded" and b'"gw"' in out.body
        # direct requests are not execution records; the agent counts them
        pool = p.runner.pools[unique_id]
        (wid,) = pool.worker_ids()
        pong = await pool._slots[0].worker.worker.ping()  # type: ignore[attr-defined]
        assert pong["direct"] is True and pong["direct_requests"] == 12 and wid

        await p.delete(unique_id)
        assert address not in lo_faas() and registry(p) == {}
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(timeout=5) as client:
                await client.get(f"http://{address}/")
        # re-deployed: an address again (the freed one or another), then shutdown releases it
        fn = await p.deploy(
            FunctionSpec(name=unique_id, image=f"{unique_id}:1", scale={"min": 1, "max": 1})  # type: ignore[arg-type]
        )
        address = p.view(fn)["address"]
        assert address is not None
    # closed: nothing left on lo (leak_checked_platform's assert_no_leaks checks the pool as well)
    assert direct_addresses_left(settings) == []

    # a restart gets the same address back (the registry row persisted) and serves it again
    async with leak_checked_platform(settings, store) as env:  # type: ignore[arg-type]
        p = env.platform
        assert p.view(p.functions.get(unique_id))["address"] == address
        assert f"inet {address}/32" in lo_faas()
        async with httpx.AsyncClient(timeout=60) as client:
            r = await client.post(f"http://{address}/", content=b"again")
            assert r.status_code == 200 and r.json()["echo"] == "again"
        await p.delete(unique_id)
        await p.delete(f"{unique_id}-e")
    assert direct_addresses_left(settings) == []


async def test_stale_lo_faas_addresses_are_removed_at_start(
    settings: Settings, unique_id: str, tmp_path: Path
) -> None:
    """What a crashed daemon left on lo inside the pool, owned by no function, goes at start-up."""
    from faasd.runtime import loaddr

    store = build_function_image(settings, f"{unique_id}:1", tmp_path)
    hosts = list(parse_pool(settings.direct_pool).hosts())
    stale = str(hosts[-1])
    loaddr.add(stale)
    try:
        async with leak_checked_platform(settings, store) as env:  # type: ignore[arg-type]
            assert stale not in lo_faas()
            assert env.platform.addresses is not None
    finally:
        loaddr.remove(stale)


def test_pool_outside_loopback_is_refused() -> None:
    for bad in ("10.0.0.0/24", "0.0.0.0/0", "128.0.0.0/16", "not-a-net"):
        with pytest.raises(InvalidInputError, match="FAASD_DIRECT_POOL"):
            parse_pool(bad)
    assert str(parse_pool("127.77.0.0/16")) == "127.77.0.0/16"


async def test_http_function_direct_address(real_platform: Platform, unique_id: str) -> None:
    """An http-mode function: faasd-init in the sandbox relays the address's connections to the server."""
    from test_platform_real import HTTP_SERVER

    p = real_platform
    fn = await p.deploy(
        FunctionSpec(
            name=unique_id,
            image=f"{unique_id}:1",
            runtime="http",
            command=["python3", "-c", HTTP_SERVER],
            scale={"min": 1, "max": 1},
        )  # type: ignore[arg-type]
    )
    url = p.view(fn)["direct_url"]
    assert url is not None
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(url + "x?y=1", content=b"relay", headers={"x-trace": "t"})
    assert (r.status_code, r.text) == (201, "/x?y=1|t|relay")
    address = p.view(fn)["address"]
    await p.delete(unique_id)
    assert address not in lo_faas()
