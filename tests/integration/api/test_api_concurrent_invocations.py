"""1000 invocations in flight at once through a real daemon (loopback, auth on), in the regular suite.

A warm python echo function (pool max 4, a queue that holds every request): every invocation answers
200 with its own payload, the pool never exceeds its max, nothing is left queued, and the records count
exactly: ``invocation_count``, the ``faasd_invocations_total`` counter and the execution records all say
1001 succeeded (one warm-up + 1000), none failed. No timing is asserted (bench/ measures speed); the
time-outs only stop a hung run. The soak (memory over minutes) stays in tests/stress.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from faasd.testing.helpers import deploy_function, unique_name
from faasd.testing.leaks import leak_checked_server
from faasd.testing.server import FaasdServer
from fixtures.invoke import invoke_echo

pytestmark = pytest.mark.slow

CONCURRENT = 1000
POOL_MAX = 4
ECHO = 'def handle(event, context):\n    return {"i": event.json()["i"]}\n'


@pytest.fixture(scope="module")
def server() -> Iterator[FaasdServer]:
    with leak_checked_server(env={"FAASD_BASE_IMAGES": "python"}) as s:
        yield s


def _counter(metrics: str, name: str, status: str) -> float:
    """The value of ``faasd_invocations_total{function=name, status=status}`` (0 when absent)."""
    total = 0.0
    for line in metrics.splitlines():
        m = re.fullmatch(r"faasd_invocations_total\{(.*)\} (\S+)", line)
        if m and f'function="{name}"' in m.group(1) and f'status="{status}"' in m.group(1):
            total += float(m.group(2))
    return total


@pytest.mark.timeout(1200)
async def test_1000_concurrent_invocations_all_answer_and_are_counted(
    server: FaasdServer, tmp_path: Path
) -> None:
    src = tmp_path / "echo"
    src.mkdir()
    (src / "handler.py").write_text(ECHO)
    name = unique_name("conc")
    with server.client(timeout=300.0) as c:
        deploy_function(
            c, name, source=src, server=server, runtime="python", handler="handler.handle",
            mode="cached", min_replicas=1, max_replicas=POOL_MAX, queue_size=CONCURRENT + 100,
            timeout_s=300, idle_ttl_s=3600,
        )  # fmt: skip
    limits = httpx.Limits(max_connections=CONCURRENT + 10, max_keepalive_connections=CONCURRENT + 10)
    timeout = httpx.Timeout(600.0, connect=120.0, pool=600.0)
    headers = {"Authorization": f"Bearer {server.api_key}"}
    async with httpx.AsyncClient(
        base_url=server.url, headers=headers, limits=limits, timeout=timeout
    ) as client:
        assert await invoke_echo(client, name, -1) is None  # the warm worker answers before the storm
        max_replicas_seen = 0
        done = asyncio.Event()

        async def watch_pool() -> None:
            nonlocal max_replicas_seen
            while not done.is_set():
                r = await client.get(f"/api/v1/functions/{name}", timeout=60.0)
                assert r.status_code == 200, r.text
                max_replicas_seen = max(max_replicas_seen, r.json()["status"]["replicas"])
                await asyncio.sleep(0.5)

        watcher = asyncio.create_task(watch_pool())
        results = await asyncio.wait_for(
            asyncio.gather(*(invoke_echo(client, name, i) for i in range(CONCURRENT))), timeout=900
        )
        done.set()
        await watcher
        fn = (await client.get(f"/api/v1/functions/{name}", timeout=60.0)).json()
        metrics = (await client.get("/metrics", timeout=60.0)).text
        listed = (await client.get("/api/v1/executions", params={"function": name, "limit": 1000})).json()
        failed = (
            await client.get("/api/v1/executions", params={"function": name, "status": "failed"})
        ).json()
    errors = [r for r in results if r is not None]
    assert not errors, f"{len(errors)} of {CONCURRENT} invocations failed, e.g. {errors[:5]}"
    assert 1 <= max_replicas_seen <= POOL_MAX, max_replicas_seen
    assert fn["status"]["queued"] == 0 and fn["status"]["busy"] == 0, fn["status"]
    assert fn["invocation_count"] == CONCURRENT + 1, fn["invocation_count"]
    assert _counter(metrics, name, "succeeded") == CONCURRENT + 1
    assert _counter(metrics, name, "failed") == 0
    executions = listed["executions"]
    assert len(executions) == 1000 and len({e["id"] for e in executions}) == 1000  # the newest 1000 of 1001
    assert {e["status"] for e in executions} == {"succeeded"} and {e["function"] for e in executions} == {
        name
    }
    assert failed["executions"] == []
    with server.client(timeout=120.0) as c:
        c.delete_function(name)
