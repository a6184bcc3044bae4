"""Benchmark part of ``bench/snapshots.py``: a ``checkpointed`` function's cold start through the daemon's
HTTP API against the cold start of the same function in ``cached`` mode, same run.

A real daemon (``faasd.testing.server.FaasdServer``, private data/run dirs) gets the same python function
twice, ``mode=checkpointed`` and ``mode=cached``, both ``scale {min 0, max 1}``. The handler's module
initialises for ≥ 300 ms (hashing into ≥ 60 MB of state, like loading a model; it keeps hashing until
300 ms have passed) and records a random init id and its init time.
Each round, for each mode in alternating order: ``POST /scale {"replicas": 0}`` (no worker left), then the
latency of the first ``POST /api/v1/functions/<name>/invoke`` measured with an httpx client (a fresh
connection per request). The answer must be 200 with ``X-Cold-Start: true``; a ``checkpointed`` answer must
carry the init id of its checkpoint (the module did not run again: a real restore), a ``cached`` one a new
init id every round (a real initialisation). Any failed request fails the run.

The first invocation of the ``checkpointed`` function initialises and takes the checkpoint: it is a warm-up,
not measured (one warm-up for ``cached`` too).
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HEAVY_HANDLER = r'''
import hashlib, os, time
_t0 = time.perf_counter()
STATE = {i: hashlib.sha256(str(i).encode()).hexdigest() for i in range(250000)}
while time.perf_counter() - _t0 < 0.3:  # at least 300 ms of init, however fast the host
    STATE[len(STATE)] = hashlib.sha256(str(len(STATE)).encode()).hexdigest()
INIT_MS = (time.perf_counter() - _t0) * 1000
INIT_ID = os.urandom(8).hex()


def handle(event, context):
    return {"init": INIT_ID, "init_ms": round(INIT_MS, 1), "n": len(STATE)}
'''
MODES = ("checkpointed", "cached")
RESTORED_LOG = re.compile(r"worker \S+ of (\S+) restored from checkpoint \S+ in ([0-9.]+) ms")
"""The daemon's log line of a checkpointed start (restore + agent attach, ms): the breakdown."""


def med_or_none(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 1) if xs else None


def _invoke(base_url: str, headers: dict[str, str], name: str) -> tuple[float, dict[str, Any]]:
    """First-request latency (ms) of ``name``, with a fresh client (new TCP connection)."""
    with httpx.Client(base_url=base_url, headers=headers, timeout=120.0) as http:
        t0 = time.perf_counter()
        r = http.post(f"/api/v1/functions/{name}/invoke", content=b"{}")
        ms = (time.perf_counter() - t0) * 1000
    if r.status_code != 200:
        raise RuntimeError(f"invoke {name}: {r.status_code} {r.text[:500]}")
    if r.headers.get("x-cold-start") != "true":
        raise RuntimeError(f"invoke {name}: not a cold start (X-Cold-Start={r.headers.get('x-cold-start')})")
    body: dict[str, Any] = json.loads(r.content)
    return ms, body


def _scale_to_zero(base_url: str, headers: dict[str, str], name: str) -> None:
    with httpx.Client(base_url=base_url, headers=headers, timeout=120.0) as http:
        r = http.post(f"/api/v1/functions/{name}/scale", json={"replicas": 0})
    if r.status_code != 200:
        raise RuntimeError(f"scale {name} to 0: {r.status_code} {r.text[:500]}")


def run(rounds: int) -> dict[str, Any]:
    """Deploy the heavy function in both modes on a fresh daemon and measure ``rounds`` cold starts each."""
    from faasd.testing.helpers import deploy_function
    from faasd.testing.server import FaasdServer

    server = FaasdServer.start(env={"FAASD_BASE_IMAGES": "python"}, start_timeout=900.0)
    lat: dict[str, list[float]] = {m: [] for m in MODES}
    init_ms: dict[str, list[float]] = {m: [] for m in MODES}
    leaked: list[Any] = []
    log = ""
    try:
        names = {m: f"bench-heavy-{m}" for m in MODES}
        with tempfile.TemporaryDirectory(prefix="faasd-bench-http-") as tmp:
            for mode, name in names.items():
                src = Path(tmp) / name
                src.mkdir()
                (src / "handler.py").write_text(HEAVY_HANDLER)
                with server.client(timeout=300.0) as client:
                    deploy_function(client, name, source=src, server=server, runtime="python",
                                    handler="handler.handle", mode=mode, min_replicas=0, max_replicas=1,
                                    memory_mb=256)
        headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
        # warm-up: checkpointed initialises and takes its checkpoint; cached for symmetry
        checkpoint_init = ""
        for mode in MODES:
            _scale_to_zero(server.url, headers, names[mode])
            _, body = _invoke(server.url, headers, names[mode])
            if mode == "checkpointed":
                checkpoint_init = body["init"]
        seen_cached: set[str] = set()
        for r in range(rounds):
            order = MODES if r % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                _scale_to_zero(server.url, headers, names[mode])
                ms, body = _invoke(server.url, headers, names[mode])
                if mode == "checkpointed" and body["init"] != checkpoint_init:
                    raise RuntimeError("checkpointed cold start ran the module's init again (no restore)")
                if mode == "cached":
                    if body["init"] in seen_cached or body["init"] == checkpoint_init:
                        raise RuntimeError("cached cold start reused an initialised process")
                    seen_cached.add(body["init"])
                lat[mode].append(ms)
                init_ms[mode].append(float(body["init_ms"]))
        log = server.log_tail(100000)
    finally:
        leaked = server.stop()
    if leaked:
        raise RuntimeError(f"the daemon leaked: {leaked}")
    med = {m: round(statistics.median(v), 1) for m, v in lat.items()}
    restores = [float(ms) for fn, ms in RESTORED_LOG.findall(log) if fn == "bench-heavy-checkpointed"]
    return {
        "rounds": rounds,
        "handler": HEAVY_HANDLER.strip(),
        "first_request_ms": {
            m: {"median_ms": med[m], "min_ms": round(min(v), 1), "max_ms": round(max(v), 1), "n": len(v),
                "samples_ms": [round(x, 1) for x in v]}
            for m, v in lat.items()
        },
        "module_init_ms_median": round(statistics.median(init_ms["cached"]), 1),
        "checkpointed_restore_and_attach_ms_median": med_or_none(restores),
        "ratio_checkpointed_vs_cached": round(med["checkpointed"] / med["cached"], 2),
    }
