"""Benchmark: snapshot (checkpoint --leave-running + store), restore, branch-10, vs. a cold start.

Runs as root with real runc + CRIU on the dev Python rootfs (/var/lib/faasd-dev/rootfs-python).
Two programs: ``light`` (stdlib imports + a small dict) and ``heavy`` (~1 s of initialisation
building ~60 MB of state, like a function loading a model); both then count in memory. "Ready"
means: the first line of output has been read on the host.

    .venv/bin/python bench/snapshots.py [--rounds 5] [--branch 10] [--programs light,heavy]

Prints a table and writes bench/results/snapshots.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from faasd.config import Settings
from faasd.runtime import Limits, SandboxManager, SandboxSpec
from faasd.snapshots.service import branch, restore_snapshot, snapshot_sandbox
from faasd.snapshots.store import SnapshotStore

ROOTFS = Path(os.environ.get("FAASD_TEST_ROOTFS_DIR", "/var/lib/faasd-dev")) / "rootfs-python"
PROGRAMS = {
    # small: stdlib imports + a small dict (~10 MB RSS)
    "light": r"""
import json, decimal, email.parser, http.client, sqlite3, random, time
state = {i: str(i) * 10 for i in range(20000)}
n = 0
while True:
    n += 1
    print(n, len(state), flush=True)
    time.sleep(0.01)
""",
    # expensive initialisation (~1 s CPU, ~60 MB of state), as a function loading a model would have
    "heavy": r"""
import hashlib, json, decimal, email.parser, http.client, sqlite3, random, time
state = {i: hashlib.sha256(str(i).encode()).hexdigest() for i in range(250000)}
n = 0
while True:
    n += 1
    print(n, len(state), flush=True)
    time.sleep(0.01)
""",
}


def _version(binary: str) -> str:
    res = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return res.stdout.split("\n")[0]


def spec(sid: str, program: str) -> SandboxSpec:
    return SandboxSpec(id=sid, lowers=[ROOTFS], args=["python3", "-c", PROGRAMS[program]],
                       limits=Limits(memory_mb=256, disk_mb=64, timeout_s=None))


def stats(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"n": len(xs), "median_ms": round(statistics.median(xs), 1), "min_ms": round(xs[0], 1),
            "max_ms": round(xs[-1], 1), "mean_ms": round(statistics.fmean(xs), 1)}


async def wait_first_line_sandbox(sb: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while b"\n" not in sb.stdout():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no output: {sb.stderr()[-500:]!r}")
        await asyncio.sleep(0.001)


async def scenario(program: str, rounds: int, branch_n: int) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="faasd-bench-snap-", dir="/var/tmp"))
    settings = Settings(data_dir=base / "data", run_dir=base / "run", cache_dir=base / "cache")
    manager = SandboxManager(settings)
    store = SnapshotStore(settings)
    tag = uuid.uuid4().hex[:6]
    cold, snap_ms, ckpt_ms, restore_ms, restore_ready_ms, branch_ms = [], [], [], [], [], []
    sizes: dict[str, Any] = {}
    ckpt_parts: dict[str, list[float]] = {}
    restore_parts: dict[str, list[float]] = {}
    try:
        for r in range(rounds):
            # cold start: create + start + first output
            t0 = time.perf_counter()
            sb = await manager.create(spec(f"fd-bench-{tag}-cold{r}", program), stdin_pipe=False)
            await sb.start()
            await wait_first_line_sandbox(sb)
            cold.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.2)
            # snapshot of the running sandbox (it keeps running)
            t0 = time.perf_counter()
            snap = await snapshot_sandbox(store, sb)
            snap_ms.append((time.perf_counter() - t0) * 1000)
            ckpt_ms.append(float(snap.meta.extra["checkpoint_ms"]["total"]))
            for k, v in snap.meta.extra["checkpoint_ms"].items():
                ckpt_parts.setdefault(k, []).append(float(v))
            if r == 0:
                sizes = {"logical_bytes": snap.sizes.logical_bytes, "stored_bytes": snap.sizes.stored_bytes,
                         "files": snap.sizes.files}
            else:
                sizes.setdefault("new_bytes_later_snapshots", []).append(snap.sizes.new_bytes)
            # restore into a new sandbox (materialisation of the snapshot happens once, included here
            # only for the first restore of each snapshot: measured separately below)
            store.materialized(snap.id)
            t0 = time.perf_counter()
            restored = await restore_snapshot(store, snap.id, f"fd-bench-{tag}-r{r}", manager=manager)
            rs = restored.sandbox
            restore_ms.append((time.perf_counter() - t0) * 1000)
            await wait_first_line_sandbox(rs)
            restore_ready_ms.append((time.perf_counter() - t0) * 1000)
            for k, v in restored.timings_ms.items():
                restore_parts.setdefault(k, []).append(v)
            await rs.destroy()
            # branch-N
            t0 = time.perf_counter()
            copies = [x.sandbox for x in await branch(
                store, snap.id, [f"fd-bench-{tag}-b{r}-{i}" for i in range(branch_n)], manager=manager,
                concurrency=2)]
            for c in copies:
                await wait_first_line_sandbox(c)
            branch_ms.append((time.perf_counter() - t0) * 1000)
            for c in copies:
                await c.destroy()
            await sb.destroy()
        t0 = time.perf_counter()
        mat_dir = base / "mat"
        store.materialize(store.list()[0].id, mat_dir)
        materialize_ms = (time.perf_counter() - t0) * 1000
    finally:
        for sb in list(manager._sandboxes.values()):
            await sb.destroy()
        subprocess.run(["umount", "-R", "-l", str(base)], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)
    cold_med = statistics.median(cold)
    result: dict[str, Any] = {
        "program": PROGRAMS[program].strip(),
        "rounds": rounds,
        "cold_start_to_first_output": stats(cold),
        "snapshot_total": stats(snap_ms),
        "snapshot_checkpoint_only": stats(ckpt_ms),
        "restore_running": stats(restore_ms),
        "restore_to_first_output": stats(restore_ready_ms),
        f"branch_{branch_n}_to_all_output": stats(branch_ms),
        "materialize_snapshot_ms": round(materialize_ms, 1),
        "checkpoint_breakdown_median_ms": {k: round(statistics.median(v), 1) for k, v in ckpt_parts.items()},
        "restore_breakdown_median_ms": {k: round(statistics.median(v), 1) for k, v in restore_parts.items()},
        "snapshot_size": sizes,
        "ratios_vs_cold_median": {
            "restore_to_first_output": round(statistics.median(restore_ready_ms) / cold_med, 2),
            f"branch_{branch_n}_per_copy": round(statistics.median(branch_ms) / branch_n / cold_med, 2),
            "snapshot_total": round(statistics.median(snap_ms) / cold_med, 2),
        },
    }
    return result


async def main(programs: list[str], rounds: int, branch_n: int, out: Path) -> dict[str, Any]:
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
                 "runc": _version("runc"), "criu": _version(shutil.which("criu") or "/usr/local/sbin/criu")},
        "note": "'ready' = first line of the program's output read on the host; the machine is shared",
        "scenarios": {},
    }
    for program in programs:
        result["scenarios"][program] = await scenario(program, rounds, branch_n)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def print_table(res: dict[str, Any]) -> None:
    rows = [(k, v) for k, v in res.items() if isinstance(v, dict) and "median_ms" in v]
    print(f"{'measurement':38} {'median':>9} {'min':>9} {'max':>9}   n")
    for name, s in rows:
        print(f"{name:38} {s['median_ms']:>7.1f}ms {s['min_ms']:>7.1f}ms {s['max_ms']:>7.1f}ms  {s['n']}")
    print("ratios vs cold start median:", res["ratios_vs_cold_median"])
    print("snapshot size:", res["snapshot_size"], " materialize:", res["materialize_snapshot_ms"], "ms")
    print("checkpoint breakdown:", res["checkpoint_breakdown_median_ms"])
    print("restore breakdown:", res["restore_breakdown_median_ms"])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--programs", default="light,heavy", help="comma-separated: light, heavy")
    ap.add_argument("--branch", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "snapshots.json")
    args = ap.parse_args()
    full = asyncio.run(main(args.programs.split(","), args.rounds, args.branch, args.out))
    for name, sc in full["scenarios"].items():
        print(f"\n== {name} ==")
        print_table(sc)
