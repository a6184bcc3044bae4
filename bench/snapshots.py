"""Benchmark: snapshot, restore (hot and from the store), branch-N and their memory, vs. a cold start.

Runs as root with real runc + CRIU on the dev Python rootfs (``$FAASD_TEST_ROOTFS_DIR/rootfs-python``,
default /var/lib/faasd-dev). Two programs: ``light`` (stdlib imports + a small dict) and ``heavy``
(~0.5-1 s of initialisation building ~60 MB of state, like a function loading a model); both then
print a line every 10 ms. "Ready" = the first line of output has been read on the host.

Each round, all measured the same way in the same run:

* **cold start**: create + start the program, until its first line (the reference of every ratio);
* **snapshot** of that running sandbox (it keeps running): the checkpoint's phases and storing it;
  *frozen* is how long the source stood still: when CRIU runs directly it stops the tasks itself and
  faasd copies the overlay upper in CRIU's post-dump call-back, and the figure is CRIU's own (its
  ``stats-dump``: freezing + frozen); through runc it is faasd's freezer write -> thaw;
* **restore, hot**: the snapshot's unpacked copy exists (a fresh snapshot adopts its checkpoint dir);
* **restore, from store**: the unpacked copy is evicted first, so unpacking the blobs is included;
* **branch-N**: N copies of the (hot) snapshot, until every copy printed its first line, against the
  hot restore of the same round;
* **memory**: PSS (``/proc/<pid>/smaps_rollup``, shared pages divided among their users) of one
  restored copy, and the sum over the N branch copies when all answered and again once ``ksmd`` has
  merged the pages the copies share (restored sandboxes opt into KSM; ``--ksm`` turns ``ksmd`` on for
  the run with a faster scan rate and puts the host's settings back at the end).

* **through runc** (same round, same snapshot source): a snapshot by ``runc checkpoint`` and a hot restore
  by ``runc restore`` (``Settings.criu_direct=False``), against faasd's own path that runs CRIU directly
  (:mod:`faasd.runtime.criu_dump`, :mod:`faasd.runtime.criu_restore`); every result records which one ran;

* **HTTP, ``checkpointed`` vs ``cached``** (``bench/snapshot_http.py``): the same ≥ 300 ms-init function
  deployed in both modes on a real daemon; first-request latency after scaling to zero, alternating order.

    .venv/bin/python bench/snapshots.py [--rounds 5] [--branch 10] [--programs light,heavy] [--ksm]
        [--http-rounds N]    (0: skip the HTTP part; default: --rounds)

Prints a table per program and writes bench/results/snapshots.json.
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
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from faasd.config import Settings
from faasd.runtime import Limits, SandboxManager, SandboxSpec, ksm
from faasd.runtime.sandbox import Sandbox
from faasd.snapshots.service import branch, restore_snapshot, snapshot_sandbox
from faasd.snapshots.store import SnapshotStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
import snapshot_http

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
    # expensive initialisation (~60 MB of state), as a function loading a model would have
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
KSM_SETTLE_S = 30.0


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


async def wait_first_line_sandbox(sb: Sandbox, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while b"\n" not in sb.stdout():
        if time.monotonic() > deadline or sb.exit_status is not None:
            raise RuntimeError(f"sandbox {sb.id} gave no output: {sb.stderr()[-500:]!r}")
        await asyncio.sleep(0.001)


def pss_kib(pid: int | None) -> int:
    if pid is None:
        raise RuntimeError("sandbox has no pid")
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Pss for pid {pid}")


async def settle_ksm(pids: list[int | None], timeout_s: float) -> tuple[int, float]:
    """Sum of PSS of ``pids`` once it stops shrinking (two ksmd full scans without change) or at the
    timeout; returns (KiB, seconds waited)."""
    t0 = time.monotonic()
    last = sum(pss_kib(p) for p in pids)
    scans = ksm.host_stats().full_scans
    stable = 0
    while time.monotonic() - t0 < timeout_s:
        await asyncio.sleep(0.5)
        now_scans = ksm.host_stats().full_scans
        if now_scans == scans:
            continue
        scans = now_scans
        cur = sum(pss_kib(p) for p in pids)
        stable = stable + 1 if cur >= last * 0.99 else 0
        last = cur
        if stable >= 2:
            break
    return last, time.monotonic() - t0


def med(xs: list[float]) -> float:
    return round(statistics.median(xs), 1)


async def scenario(program: str, rounds: int, branch_n: int, concurrency: int,
                   use_ksm: bool) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="faasd-bench-snap-", dir="/var/tmp"))
    settings = Settings(data_dir=base / "data", run_dir=base / "run", cache_dir=base / "cache")
    manager = SandboxManager(settings)
    store = SnapshotStore(settings)
    tag = uuid.uuid4().hex[:6]
    m: dict[str, list[float]] = {k: [] for k in (
        "cold", "snapshot", "frozen", "store_ingest", "hot", "hot_running", "from_store", "unpack",
        "branch", "mem_one_kib", "mem_branch_at_answer_kib", "mem_branch_ksm_kib", "ksm_settle_s",
        "snapshot_runc", "frozen_runc", "hot_runc")}
    engines: set[str] = set()
    ckpt_parts: dict[str, list[float]] = {}
    hot_parts: dict[str, list[float]] = {}
    sizes: dict[str, Any] = {}
    try:
        for r in range(rounds):
            # cold start: create + start + first output
            t0 = time.perf_counter()
            src = await manager.create(spec(f"fd-bench-{tag}-cold{r}", program), stdin_pipe=False)
            await src.start()
            await wait_first_line_sandbox(src)
            m["cold"].append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.3)
            # snapshot of the running sandbox (it keeps running)
            t0 = time.perf_counter()
            snap = await snapshot_sandbox(store, src)
            m["snapshot"].append((time.perf_counter() - t0) * 1000)
            cms = {k: float(v) for k, v in snap.meta.extra["checkpoint_ms"].items()}
            for k, v in cms.items():
                ckpt_parts.setdefault(k, []).append(v)
            # how long the source stood still: CRIU's own measure when it stopped the tasks itself (its
            # stats-dump: freezing + frozen), faasd's freeze -> thaw otherwise
            m["frozen"].append(cms["frozen"])
            engines.add(f"dump: {snap.meta.extra.get('dumped_by')}")
            m["store_ingest"].append(m["snapshot"][-1] - cms["total"])
            if r == 0:
                sizes = {"logical_bytes": snap.sizes.logical_bytes, "stored_bytes": snap.sizes.stored_bytes,
                         "files": snap.sizes.files}
            # restore, hot (the snapshot adopted its checkpoint dir as its unpacked copy)
            t0 = time.perf_counter()
            restored = await restore_snapshot(store, snap.id, f"fd-bench-{tag}-r{r}", manager=manager)
            m["hot_running"].append((time.perf_counter() - t0) * 1000)
            await wait_first_line_sandbox(restored.sandbox)
            m["hot"].append((time.perf_counter() - t0) * 1000)
            for k, v in restored.timings_ms.items():
                hot_parts.setdefault(k, []).append(v)
            m["mem_one_kib"].append(pss_kib(restored.sandbox.pid))
            engines.add(f"restore: {restored.sandbox.restored_by}")
            await restored.sandbox.destroy()
            # the same through runc (runc checkpoint, runc restore), same round
            manager.settings.criu_direct = False
            try:
                t0 = time.perf_counter()
                snap_r = await snapshot_sandbox(store, src)
                m["snapshot_runc"].append((time.perf_counter() - t0) * 1000)
                c = {k: float(v) for k, v in snap_r.meta.extra["checkpoint_ms"].items()}
                m["frozen_runc"].append(c["frozen"])
                assert snap_r.meta.extra.get("dumped_by") == "runc"
                t0 = time.perf_counter()
                via_runc = await restore_snapshot(store, snap.id, f"fd-bench-{tag}-u{r}", manager=manager)
                await wait_first_line_sandbox(via_runc.sandbox)
                m["hot_runc"].append((time.perf_counter() - t0) * 1000)
                assert via_runc.sandbox.restored_by == "runc"
                await via_runc.sandbox.destroy()
                store.delete(snap_r.id)
            finally:
                manager.settings.criu_direct = True
            # restore from the store: unpacking the blobs included
            if not store.evict(snap.id):
                raise RuntimeError(f"could not evict the unpacked copy of {snap.id}")
            t0 = time.perf_counter()
            await asyncio.to_thread(store.materialized, snap.id)
            m["unpack"].append((time.perf_counter() - t0) * 1000)
            fresh = await restore_snapshot(store, snap.id, f"fd-bench-{tag}-s{r}", manager=manager)
            await wait_first_line_sandbox(fresh.sandbox)
            m["from_store"].append((time.perf_counter() - t0) * 1000)
            await fresh.sandbox.destroy()
            # branch-N (hot), every copy answering
            t0 = time.perf_counter()
            copies = [x.sandbox for x in await branch(
                store, snap.id, [f"fd-bench-{tag}-b{r}-{i}" for i in range(branch_n)], manager=manager,
                concurrency=concurrency)]
            for c in copies:
                await wait_first_line_sandbox(c)
            m["branch"].append((time.perf_counter() - t0) * 1000)
            pids = [c.pid for c in copies]
            m["mem_branch_at_answer_kib"].append(sum(pss_kib(p) for p in pids))
            if use_ksm:
                kib, waited = await settle_ksm(pids, KSM_SETTLE_S)
                m["mem_branch_ksm_kib"].append(kib)
                m["ksm_settle_s"].append(waited)
            for c in copies:
                await c.destroy()
            await src.destroy()
    finally:
        for sb in list(manager._sandboxes.values()):
            await sb.destroy()
        subprocess.run(["umount", "-R", "-l", str(base)], capture_output=True, check=False)
        store.image_cache.clear()  # process images unpacked into memory (/dev/shm), and their dir
        shutil.rmtree(base, ignore_errors=True)
    cold = med(m["cold"])
    one = med(m["hot"])
    mem_one = statistics.median(m["mem_one_kib"])
    result: dict[str, Any] = {
        "program": PROGRAMS[program].strip(),
        "rounds": rounds,
        "branch_n": branch_n,
        "branch_concurrency": concurrency,
        "cold_start_to_first_output": stats(m["cold"]),
        "snapshot_total": stats(m["snapshot"]),
        "source_frozen": stats(m["frozen"]),
        "store_ingest": stats(m["store_ingest"]),
        "restore_hot_running": stats(m["hot_running"]),
        "restore_hot_to_first_output": stats(m["hot"]),
        "unpack_from_store": stats(m["unpack"]),
        "restore_from_store_to_first_output": stats(m["from_store"]),
        f"branch_{branch_n}_to_all_output": stats(m["branch"]),
        "checkpoint_breakdown_median_ms": {k: med(v) for k, v in ckpt_parts.items()},
        "restore_breakdown_median_ms": {k: med(v) for k, v in hot_parts.items()},
        "engines": sorted(engines),
        "through_runc": {
            "snapshot_total": stats(m["snapshot_runc"]),
            "source_frozen": stats(m["frozen_runc"]),
            "restore_hot_to_first_output": stats(m["hot_runc"]),
            "ratio_restore_hot_vs_cold": round(med(m["hot_runc"]) / cold, 2),
            "ratio_snapshot_total_vs_cold": round(med(m["snapshot_runc"]) / cold, 2),
        },
        "memory_kib": {
            "one_copy_pss": int(mem_one),
            f"branch_{branch_n}_pss_at_answer": int(statistics.median(m["mem_branch_at_answer_kib"])),
            **({f"branch_{branch_n}_pss_after_ksm": int(statistics.median(m["mem_branch_ksm_kib"])),
                "ksm_settle_s": round(statistics.median(m["ksm_settle_s"]), 1)} if use_ksm else {}),
        },
        "snapshot_size": sizes,
        "ratios": {
            "restore_hot_vs_cold": round(one / cold, 2),
            "restore_from_store_vs_cold": round(med(m["from_store"]) / cold, 2),
            f"branch_{branch_n}_vs_one_restore": round(med(m["branch"]) / one, 2),
            "snapshot_total_vs_cold": round(med(m["snapshot"]) / cold, 2),
            f"branch_{branch_n}_memory_at_answer_vs_one_copy":
                round(statistics.median(m["mem_branch_at_answer_kib"]) / mem_one, 2),
            **({f"branch_{branch_n}_memory_after_ksm_vs_one_copy":
                round(statistics.median(m["mem_branch_ksm_kib"]) / mem_one, 2)} if use_ksm else {}),
        },
    }
    return result


async def main(programs: list[str], rounds: int, branch_n: int, concurrency: int, use_ksm: bool,
               out: Path, http_rounds: int = 0) -> dict[str, Any]:
    before = ksm.host_stats()
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
                 "runc": _version("runc"), "criu": _version(shutil.which("criu") or "/usr/local/sbin/criu"),
                 "ksm_before": {"run": before.run, "pages_to_scan": before.pages_to_scan,
                                "sleep_millisecs": before.sleep_millisecs}},
        "note": "'ready' = first line of the program's output read on the host; the machine is shared; "
                "memory = PSS of the copies' processes",
        "scenarios": {},
    }
    if use_ksm:
        if not ksm.supported():
            raise SystemExit("--ksm: this kernel has no per-process KSM (PR_SET_MEMORY_MERGE, Linux >= 6.4)")
        ksm.configure(run=1, pages_to_scan=2000, sleep_millisecs=20)
    try:
        for program in programs:
            result["scenarios"][program] = await scenario(program, rounds, branch_n, concurrency, use_ksm)
    finally:
        if use_ksm:
            ksm.configure(run=before.run, pages_to_scan=before.pages_to_scan,
                          sleep_millisecs=before.sleep_millisecs)
    if http_rounds > 0:
        result["http_checkpointed_vs_cached"] = await asyncio.to_thread(snapshot_http.run, http_rounds)
    result["host"]["loadavg_at_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def print_table(res: dict[str, Any]) -> None:
    rows = [(k, v) for k, v in res.items() if isinstance(v, dict) and "median_ms" in v]
    print(f"{'measurement':38} {'median':>9} {'min':>9} {'max':>9}   n")
    for name, s in rows:
        print(f"{name:38} {s['median_ms']:>7.1f}ms {s['min_ms']:>7.1f}ms {s['max_ms']:>7.1f}ms  {s['n']}")
    print("checkpoint breakdown (median ms):", res["checkpoint_breakdown_median_ms"])
    print("restore breakdown (median ms):   ", res["restore_breakdown_median_ms"])
    print("engines:", res["engines"])
    print("through runc, same rounds:", json.dumps(res["through_runc"]))
    print("memory (KiB):", res["memory_kib"])
    print("same-run ratios:", res["ratios"])
    print("snapshot size:", res["snapshot_size"])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--programs", default="light,heavy", help="comma-separated: light, heavy")
    ap.add_argument("--branch", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=2, help="restores of a branch running at once")
    ap.add_argument("--ksm", action=argparse.BooleanOptionalAction, default=True,
                    help="run ksmd during the bench (host settings restored at the end)")
    ap.add_argument("--http-rounds", type=int, default=None,
                    help="rounds of the HTTP checkpointed-vs-cached part (0: skip; default: --rounds)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "snapshots.json")
    args = ap.parse_args()
    programs = [p for p in args.programs.split(",") if p]
    http_rounds = args.rounds if args.http_rounds is None else args.http_rounds
    full = asyncio.run(main(programs, args.rounds, args.branch, args.concurrency, args.ksm, args.out,
                            http_rounds))
    for name, sc in full["scenarios"].items():
        print(f"\n== {name} ==")
        print_table(sc)
    if "http_checkpointed_vs_cached" in full:
        h = full["http_checkpointed_vs_cached"]
        print("\n== HTTP: checkpointed vs cached cold start (heavy init) ==")
        for mode, st in h["first_request_ms"].items():
            print(f"{mode:14} median {st['median_ms']:8.1f} ms  min {st['min_ms']:8.1f}"
                  f"  max {st['max_ms']:8.1f}  n {st['n']}")
        print(f"module init (median) {h['module_init_ms_median']} ms; checkpointed worker restore + attach "
              f"(daemon log, median) {h['checkpointed_restore_and_attach_ms_median']} ms; ratio "
              f"checkpointed/cached {h['ratio_checkpointed_vs_cached']}")
