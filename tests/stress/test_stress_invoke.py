"""Soak through a real daemon over loopback (runs only with ``FAASD_STRESS=1``).

(1000 invocations in flight at once runs in the regular suite:
``tests/integration/api/test_api_concurrent_invocations.py``.)

* soak: invoke continuously at a bounded rate for ``FAASD_SOAK_S`` seconds (default 600) and sample
  the daemon's RSS (``/proc/<pid>/status`` VmRSS); after a warm-up it may grow by at most 10 %.

No timing is asserted: the bounds below only stop a hung run.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path

import httpx
import pytest
from stress_helpers import daemon_rss_kib, delete_function, deploy_echo

from faasd.testing.server import FaasdServer
from fixtures.invoke import invoke_echo

pytestmark = [pytest.mark.stress, pytest.mark.slow]

SOAK_S = float(os.environ.get("FAASD_SOAK_S", "600"))
SOAK_RPS = float(os.environ.get("FAASD_SOAK_RPS", "20"))
RSS_GROWTH_MAX = 0.10


def _auth(server: FaasdServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.api_key}"}


@pytest.mark.timeout(int(SOAK_S) + 900)
async def test_stress_soak_daemon_rss_bounded(stress_server: FaasdServer, tmp_path: Path) -> None:
    name = deploy_echo(
        stress_server, tmp_path, mode="cached", min_replicas=1, max_replicas=2, queue_size=1000,
        timeout_s=60, idle_ttl_s=3600,
    )
    warmup_s = min(60.0, SOAK_S / 4)
    samples: list[tuple[float, int]] = []  # (seconds since start, RSS kB)
    errors: list[str] = []
    sent = 0
    in_flight = asyncio.Semaphore(8)
    async with httpx.AsyncClient(
        base_url=stress_server.url, headers=_auth(stress_server), timeout=120.0
    ) as client:

        async def one(i: int) -> None:
            async with in_flight:
                err = await invoke_echo(client, name, i)
            if err is not None:
                errors.append(err)

        tasks: set[asyncio.Task[None]] = set()
        t0 = time.monotonic()
        next_sample = 0.0
        while (now := time.monotonic() - t0) < SOAK_S:
            if now >= next_sample:
                samples.append((now, daemon_rss_kib(stress_server)))
                next_sample += 5.0
            task = asyncio.create_task(one(sent))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
            # bounded rate: the n-th request is not sent before n / rate seconds
            await asyncio.sleep(max(0.0, sent / SOAK_RPS - (time.monotonic() - t0)))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=300)
        samples.append((time.monotonic() - t0, daemon_rss_kib(stress_server)))
    after = [kb for t, kb in samples if t >= warmup_s]
    assert len(after) >= 6, f"soak too short to judge memory: {len(after)} samples after warm-up"
    baseline = statistics.median(after[:3])
    final = statistics.median(after[-3:])
    growth = (final - baseline) / baseline
    print(f"soak {SOAK_S:g} s at {SOAK_RPS:g} req/s: {sent} requests, {len(errors)} errors; daemon RSS "
          f"{baseline / 1024:.1f} MiB after {warmup_s:g} s warm-up -> {final / 1024:.1f} MiB at the end "
          f"({growth:+.1%}), peak {max(kb for _, kb in samples) / 1024:.1f} MiB; load {os.getloadavg()}")
    assert not errors, f"{len(errors)} of {sent} invocations failed, e.g. {errors[:5]}"
    assert growth <= RSS_GROWTH_MAX, (
        f"daemon RSS grew {growth:.1%} after warm-up ({baseline} kB -> {final} kB); samples: {samples}"
    )
    delete_function(stress_server, name)
