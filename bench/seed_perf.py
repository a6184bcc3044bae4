"""The seed's three performance tests, by their names, measured in one run with same-run baselines.

Usage (root): ``.venv/bin/python bench/seed_perf.py [--cold-n 10] [--restore-n 5] [--concurrent 1000]
[--json PATH]``

* **cold start under 100 ms**: ``SandboxManager.run`` of ``python3 -c 'print("hello")'`` end to end (overlay,
  netns, seccomp, limits, runc create/start, exit, teardown), p50 of ``--cold-n``; baseline ``runc run`` of a
  bare bundle on the same rootfs (as ``bench/cold_start.py``).
* **1000 concurrent executions**: a warm python echo function (pool max 4) on a real daemon gets
  ``--concurrent`` invocations at once (``POST /api/v1/functions/<name>/invoke``, each its own payload);
  passes when every one answers 200 with its payload. Reported: the wall time of the batch and latency
  p50/p99; baseline: the same number of concurrent ``GET /healthz`` on the same daemon (its HTTP floor).
* **restore under 500 ms**: restore of a snapshot of a running python program (``light`` of
  ``bench/snapshots.py``) until its first line of output, hot (unpacked copy present), p50 of
  ``--restore-n``; baseline: the cold start of that program to its first line, same run.

Dev python rootfs: ``$FAASD_TEST_ROOTFS_DIR/rootfs-python`` (default /var/lib/faasd-dev). Writes
``bench/results/seed_perf.json`` (``seed_tests``: name, measured value, threshold, pass) that
``bench/run_all.py`` turns into the "Seed performance tests" table. Any failed run fails the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    Row,
    load_avg,
    percentile,
    print_table,
    require_root,
    start_daemon,
    summarize,
    write_result,
)
from cold_start import HELLO, bench_raw

from faasd.config import Settings
from faasd.runtime import Limits, SandboxManager, SandboxSpec
from faasd.runtime.sandbox import Sandbox
from faasd.snapshots.service import restore_snapshot, snapshot_sandbox
from faasd.snapshots.store import SnapshotStore
from faasd.testing.helpers import deploy_function, unique_name

ROOTFS = Path(os.environ.get("FAASD_TEST_ROOTFS_DIR", "/var/lib/faasd-dev")) / "rootfs-python"
LIGHT = """
import json, decimal, email.parser, http.client, sqlite3, random, time
state = {i: str(i) * 10 for i in range(20000)}
n = 0
while True:
    n += 1
    print(n, len(state), flush=True)
    time.sleep(0.01)
"""
ECHO = 'def handle(event, context):\n    return {"i": event.json()["i"]}\n'
THRESHOLDS = {"cold start under 100 ms": 100.0, "restore under 500 ms": 500.0}


async def _first_line(sb: Sandbox, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while b"\n" not in sb.stdout():
        if time.monotonic() > deadline or sb.exit_status is not None:
            raise SystemExit(f"sandbox {sb.id} gave no output: {sb.stderr()[-500:]!r}")
        await asyncio.sleep(0.001)


async def cold_and_restore(work: Path, cold_n: int, restore_n: int) -> dict[str, list[float]]:
    settings = Settings(data_dir=work / "data", run_dir=work / "run", cache_dir=work / "cache")
    manager, store = SandboxManager(settings), SnapshotStore(settings)
    tag = uuid.uuid4().hex[:6]
    out: dict[str, list[float]] = {"cold": [], "program_cold": [], "restore": []}
    for i in range(cold_n + 1):  # the first one warms the page cache, not counted
        spec = SandboxSpec(id=f"fd-bench-{tag}-c{i}", lowers=[ROOTFS], args=HELLO)
        t0 = time.perf_counter()
        res = await manager.run(spec, timeout_s=30)
        if res.exit_code != 0 or res.stdout.strip() != b"hello":
            raise SystemExit(f"cold start failed: {res}")
        if i:
            out["cold"].append((time.perf_counter() - t0) * 1000)
    limits = Limits(memory_mb=256, disk_mb=64, timeout_s=None)
    sources: list[Sandbox] = []
    try:
        for i in range(restore_n):  # the program's cold start next to each restore of it
            t0 = time.perf_counter()
            src = await manager.create(
                SandboxSpec(id=f"fd-bench-{tag}-p{i}", lowers=[ROOTFS], args=["python3", "-c", LIGHT],
                            limits=limits),
                stdin_pipe=False,
            )
            sources.append(src)
            await src.start()
            await _first_line(src)
            out["program_cold"].append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.3)
            snap = await snapshot_sandbox(store, src)
            t0 = time.perf_counter()
            restored = await restore_snapshot(store, snap.id, f"fd-bench-{tag}-r{i}", manager=manager)
            await _first_line(restored.sandbox)
            out["restore"].append((time.perf_counter() - t0) * 1000)
            await restored.sandbox.destroy()
    finally:
        for src in sources:
            await src.destroy()
        store.image_cache.clear()  # process images unpacked into memory (/dev/shm), and their dir
    return out


async def _storm(
    client: httpx.AsyncClient, n: int, *, echo: str | None = None, path: str = "/healthz"
) -> tuple[float, list[float], list[str]]:
    """``n`` requests at once (invocations of function ``echo``, else GET ``path``): wall ms, latencies
    ms of the successful ones, errors."""

    async def one(i: int) -> tuple[float, str | None]:
        t0 = time.perf_counter()
        try:
            if echo is not None:
                r = await client.post(f"/api/v1/functions/{echo}/invoke", content=json.dumps({"i": i}))
                ok = r.status_code == 200 and r.json() == {"i": i}
            else:
                r = await client.get(path)
                ok = r.status_code == 200
            err = None if ok else f"#{i}: HTTP {r.status_code}: {r.text[:200]}"
        except httpx.HTTPError as exc:
            err = f"#{i}: {type(exc).__name__}: {exc}"
        return (time.perf_counter() - t0) * 1000, err

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    wall = (time.perf_counter() - t0) * 1000
    return wall, [ms for ms, e in results if e is None], [e for _, e in results if e is not None]


def concurrent(n: int, work: Path) -> dict[str, Any]:
    server = start_daemon()
    try:
        src = work / "echo"
        src.mkdir(parents=True)
        (src / "handler.py").write_text(ECHO)
        name = unique_name("seed")
        with server.client(timeout=300.0) as c:
            deploy_function(c, name, source=src, server=server, runtime="python", handler="handler.handle",
                            mode="cached", min_replicas=1, max_replicas=4, queue_size=n + 100,
                            timeout_s=300, idle_ttl_s=3600)

        async def run() -> dict[str, Any]:
            limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
            timeout = httpx.Timeout(600.0, connect=120.0, pool=600.0)
            headers = {"Authorization": f"Bearer {server.api_key}"}
            async with httpx.AsyncClient(base_url=server.url, headers=headers, limits=limits,
                                         timeout=timeout) as client:
                _, _, warm_err = await _storm(client, 1, echo=name)  # the warm worker answers first
                if warm_err:
                    raise SystemExit(f"warm-up invocation failed: {warm_err}")
                base_wall, base_ms, base_err = await _storm(client, n, path="/healthz")
                wall, ms, errors = await _storm(client, n, echo=name)
                fn = (await client.get(f"/api/v1/functions/{name}")).json()
            return {"wall_ms": wall, "latencies_ms": ms, "errors": errors, "baseline_wall_ms": base_wall,
                    "baseline_latencies_ms": base_ms, "baseline_errors": base_err,
                    "invocation_count": fn.get("invocation_count")}

        return asyncio.run(run())
    finally:
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cold-n", type=int, default=10)
    ap.add_argument("--restore-n", type=int, default=5)
    ap.add_argument("--concurrent", type=int, default=1000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    require_root()
    if not (ROOTFS / "usr/bin/python3").exists():
        raise SystemExit(f"{ROOTFS} is not a python rootfs (run the test suite once to build it)")
    load_start, t0 = load_avg(), time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="fdb-seed-", dir="/var/tmp"))
    try:
        bench_raw(1, ROOTFS, work / "warm")  # page cache, not counted
        raw = bench_raw(args.cold_n, ROOTFS, work)
        sb = asyncio.run(cold_and_restore(work / "sb", args.cold_n, args.restore_n))
        conc = concurrent(args.concurrent, work / "conc")
    finally:
        subprocess.run(["umount", "-R", "-l", str(work)], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    cold, restore = statistics.median(sb["cold"]), statistics.median(sb["restore"])
    failed = len(conc["errors"])
    ok = args.concurrent - failed
    lat = conc["latencies_ms"]
    seed_tests = [
        {"name": "cold start under 100 ms", "measured": round(cold, 1), "unit": "ms (p50)",
         "threshold": "< 100 ms", "pass": cold < THRESHOLDS["cold start under 100 ms"],
         "how": f"SandboxManager.run of a python print, p50 of {args.cold_n}"},
        {"name": f"{args.concurrent} concurrent executions", "measured": f"{ok}/{args.concurrent} ok",
         "unit": f"in {conc['wall_ms'] / 1000:.1f} s (p50 {percentile(lat, 50):.0f} ms, "
                 f"p99 {percentile(lat, 99):.0f} ms)",
         "threshold": "all succeed", "pass": failed == 0 and conc["invocation_count"] == args.concurrent + 1,
         "how": "warm python echo function, pool max 4, all requests in flight at once"},
        {"name": "restore under 500 ms", "measured": round(restore, 1), "unit": "ms (p50)",
         "threshold": "< 500 ms", "pass": restore < THRESHOLDS["restore under 500 ms"],
         "how": f"hot restore of a running python program to its first output, p50 of {args.restore_n}"},
    ]
    rows = [
        Row("cold start under 100 ms: SandboxManager.run p50", cold, statistics.median(raw), "ms",
            "runc run"),
        Row(f"{args.concurrent} concurrent executions: wall time of the batch", conc["wall_ms"],
            conc["baseline_wall_ms"], "ms", f"{args.concurrent} concurrent /healthz"),
        Row("restore under 500 ms: hot restore to first output p50", restore,
            statistics.median(sb["program_cold"]), "ms", "cold start to first output"),
    ]
    print_table(f"seed performance tests (load {load_start} -> {load_avg()})", rows)
    for t in seed_tests:
        print(f"{t['name']}: {t['measured']} {t['unit']} (threshold {t['threshold']}): "
              f"{'PASS' if t['pass'] else 'FAIL'}")
    ms = {
        "cold": summarize(sb["cold"]),
        "raw_runc": summarize(raw),
        "restore": summarize(sb["restore"]),
        "program_cold": summarize(sb["program_cold"]),
        "concurrent": summarize(lat),
        "concurrent_wall": round(conc["wall_ms"], 1),
        "healthz_wall": round(conc["baseline_wall_ms"], 1),
        "healthz": summarize(conc["baseline_latencies_ms"]),
    }
    out = write_result(
        "seed_perf",
        {"duration_s": round(time.monotonic() - t0, 1), "loadavg_start": load_start,
         "loadavg_end": load_avg(), "seed_tests": seed_tests, "rows": rows, "ms": ms,
         "errors": conc["errors"][:10], "error_count": failed, "invocation_count": conc["invocation_count"]},
        path=args.json,
    )
    print(f"wrote {out}")
    return 1 if failed or conc["baseline_errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
