"""Cold start of a Python hello: ``SandboxManager.run`` vs raw ``runc run`` on the same rootfs.

Usage (root): ``.venv/bin/python bench/cold_start.py [-n 20] [--rootfs DIR] [--json PATH]``

* ``faasd``: ``SandboxManager.run`` end to end: overlay (tmpfs upper) + netns + config.json (seccomp,
  limits) + runc create/start + wait + destroy (runc delete, cgroups, netns, unmount, rm bundle).
* ``faasd phases``: the same split into create / start / wait(exit) / destroy.
* ``raw runc``: ``runc run`` of a minimal hand-written bundle (read-only rootfs dir directly, new
  namespaces, no seccomp, no limits), foreground, plus ``runc delete`` — the floor for runc itself.
* ``faasd gvisor`` (when runsc is installed): ``SandboxManager.run`` with ``runtime="runsc"``
  (``isolation: "gvisor"``), measured interleaved with a runc run of the same spec; and whether a gVisor
  sandbox restores: cold start of a ticking python to its first line vs restoring a capture of it to its
  first new line, runc (CRIU) and gVisor (``runsc checkpoint``/``restore``), all interleaved.
  ``--isolation-only`` measures just this pair (writes ``cold_start_isolation.json``).
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
from typing import Any, Literal

from faasd.config import Settings
from faasd.runtime import Limits, SandboxManager, SandboxSpec
from faasd.runtime.sandbox import Sandbox

HELLO = ["python3", "-c", 'print("hello")']


def _stats(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    q = statistics.quantiles(s, n=10) if len(s) >= 2 else [s[0]] * 9
    return {
        "n": len(s),
        "p50": statistics.median(s),
        "p90": q[8],
        "mean": statistics.fmean(s),
        "min": s[0],
        "max": s[-1],
    }


def _raw_bundle(bundle: Path, rootfs: Path) -> None:
    config = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": HELLO,
            "env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "cwd": "/",
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": "raw",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]},
        ],
        "linux": {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")]},
    }
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps(config))


def _raw_bundle_once(bundle: Path, rootfs: Path) -> None:
    if not (bundle / "config.json").exists():
        _raw_bundle(bundle, rootfs)


def raw_run_once(rootfs: Path, work: Path) -> float:
    """One ``runc run`` + ``runc delete`` of the bare bundle, in ms."""
    root = work / "raw-runc-root"
    bundle = work / "raw-bundle"
    _raw_bundle_once(bundle, rootfs)
    cid = f"fd-bench-raw-{uuid.uuid4().hex[:10]}"
    t0 = time.perf_counter()
    res = subprocess.run(
        ["runc", "--root", str(root), "run", "--bundle", str(bundle), cid],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    subprocess.run(["runc", "--root", str(root), "delete", "--force", cid], capture_output=True, check=False)
    ms = (time.perf_counter() - t0) * 1000
    if res.stdout.strip() != b"hello":
        raise SystemExit(f"raw runc run failed: {res.stdout!r} {res.stderr!r}")
    return ms


def bench_raw(n: int, rootfs: Path, work: Path) -> list[float]:
    return [raw_run_once(rootfs, work) for _ in range(n)]


async def bench_loop(n: int, rootfs: Path, settings: Settings) -> list[float]:
    """SandboxManager.run with the loop-mounted ext4 upper (disk_backend="loop")."""
    manager = SandboxManager(settings)
    out = []
    for _ in range(n):
        spec = SandboxSpec(
            id=f"fd-bench-{uuid.uuid4().hex[:10]}",
            lowers=[rootfs],
            args=HELLO,
            limits=Limits(disk_backend="loop"),
        )
        t0 = time.perf_counter()
        res = await manager.run(spec, timeout_s=30)
        out.append((time.perf_counter() - t0) * 1000)
        if res.exit_code != 0:
            raise SystemExit(f"faasd run (loop) failed: {res}")
    return out


async def bench_faasd(
    n: int, rootfs: Path, settings: Settings, work: Path
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per round, one each, interleaved: raw ``runc run``; ``SandboxManager.run`` (teardown awaited);
    ``SandboxManager.run(background_teardown=True)`` (what the execute API uses: answers once the program
    has exited and its output is in), whose teardown is then awaited apart (``settle``) and timed, not
    counted in the run. Then the phases of ``create``/``start``/``wait``/``destroy`` separately."""
    manager = SandboxManager(settings)
    totals: dict[str, list[float]] = {"raw": [], "faasd": [], "faasd_background": [], "teardown_after": []}

    async def run(background: bool) -> float:
        spec = SandboxSpec(id=f"fd-bench-{uuid.uuid4().hex[:10]}", lowers=[rootfs], args=HELLO)
        t0 = time.perf_counter()
        res = await manager.run(spec, timeout_s=30, background_teardown=background)
        ms = (time.perf_counter() - t0) * 1000
        if res.exit_code != 0 or res.stdout.strip() != b"hello":
            raise SystemExit(f"faasd run failed: {res}")
        return ms

    for _ in range(n):
        totals["raw"].append(raw_run_once(rootfs, work))
        totals["faasd"].append(await run(False))
        totals["faasd_background"].append(await run(True))
        t0 = time.perf_counter()
        await manager.settle()
        totals["teardown_after"].append((time.perf_counter() - t0) * 1000)
    phases: dict[str, list[float]] = {"create": [], "start": [], "wait": [], "destroy": []}
    for _ in range(n):
        spec = SandboxSpec(id=f"fd-bench-{uuid.uuid4().hex[:10]}", lowers=[rootfs], args=HELLO)
        t0 = time.perf_counter()
        sb = await manager.create(spec)
        t1 = time.perf_counter()
        await sb.start()
        t2 = time.perf_counter()
        await sb.wait(30)
        t3 = time.perf_counter()
        await sb.destroy()
        t4 = time.perf_counter()
        for k, v in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            phases[k].append(v * 1000)
    return totals, phases


async def bench_isolation(n: int, rootfs: Path, settings: Settings) -> dict[str, list[float]]:
    """``SandboxManager.run`` of the hello under runsc and runc, interleaved one by one."""
    manager = SandboxManager(settings)
    out: dict[str, list[float]] = {"runc": [], "runsc": []}
    order: tuple[Literal["runc", "runsc"], ...] = ("runsc", "runc")
    for i in range(n):
        for runtime in order if i % 2 == 0 else order[::-1]:
            spec = SandboxSpec(id=f"fd-bench-{uuid.uuid4().hex[:10]}", lowers=[rootfs], args=HELLO,
                               runtime=runtime)
            t0 = time.perf_counter()
            res = await manager.run(spec, timeout_s=60)
            out[runtime].append((time.perf_counter() - t0) * 1000)
            if res.exit_code != 0 or res.stdout.strip() != b"hello":
                raise SystemExit(f"faasd run ({runtime}) failed: {res}")
    return out


TICK = ["python3", "-u", "-c", "import time\nn = 0\nwhile True:\n n += 1\n print(n)\n time.sleep(0.01)"]
"""A process with state in memory printing a line every 10 ms; 'ready' = its first line read on the host."""


async def _first_line(sb: Sandbox, timeout_s: float = 60.0) -> None:
    deadline = time.perf_counter() + timeout_s
    while not sb.stdout().strip():
        if time.perf_counter() > deadline:
            raise SystemExit(f"sandbox {sb.id} printed nothing in {timeout_s} s")
        await asyncio.sleep(0.002)


async def bench_restore(n: int, rootfs: Path, settings: Settings) -> dict[str, list[float]]:
    """Per isolation: cold start of TICK to its first line, and restore of a capture of it to its first
    new line (runc: CRIU, gvisor: runsc checkpoint/restore), all interleaved one by one."""
    from faasd.runtime.checkpoint import checkpoint
    from faasd.runtime.restore import SnapshotDirs, restore

    manager = SandboxManager(settings)
    runtimes: tuple[Literal["runc", "runsc"], ...] = ("runsc", "runc")
    captures: dict[str, SnapshotDirs] = {}
    for runtime in runtimes:
        spec = SandboxSpec(
            id=f"fd-bench-{uuid.uuid4().hex[:10]}", lowers=[rootfs], args=TICK, runtime=runtime
        )
        sb = await manager.create(spec, stdin_pipe=False)
        try:
            await sb.start()
            await _first_line(sb)
            # gVisor's checkpoint stops its source (runsc --leave-running does not work); CRIU's leaves it
            dest = settings.data_dir / f"capture-{runtime}"
            cp = await checkpoint(sb, dest, leave_running=runtime == "runc")
        finally:
            await sb.destroy()
        captures[runtime] = SnapshotDirs(cp.criu, cp.bundle / "config.json", [*cp.lowers, cp.upper])
    out: dict[str, list[float]] = {f"{k}-{r}": [] for r in runtimes for k in ("cold", "restore")}
    for i in range(n):
        for runtime in runtimes if i % 2 == 0 else runtimes[::-1]:
            spec = SandboxSpec(
                id=f"fd-bench-{uuid.uuid4().hex[:10]}", lowers=[rootfs], args=TICK, runtime=runtime
            )
            t0 = time.perf_counter()
            sb = await manager.create(spec, stdin_pipe=False)
            try:
                await sb.start()
                await _first_line(sb)
                out[f"cold-{runtime}"].append((time.perf_counter() - t0) * 1000)
            finally:
                await sb.destroy()
            t0 = time.perf_counter()
            r = await restore(manager, captures[runtime], f"fd-bench-{uuid.uuid4().hex[:10]}")
            try:
                await _first_line(r.sandbox)
                out[f"restore-{runtime}"].append((time.perf_counter() - t0) * 1000)
            finally:
                await r.sandbox.destroy()
    return out


def print_rows(title: str, rows: dict[str, dict[str, float]]) -> None:
    print(title)
    print(f"{'':34} {'p50':>8} {'p90':>8} {'mean':>8} {'min':>8} {'max':>8}")
    for name, st in rows.items():
        print(
            f"{name:34} {st['p50']:8.1f} {st['p90']:8.1f} {st['mean']:8.1f} {st['min']:8.1f} {st['max']:8.1f}"
        )


def main_isolation(n: int, rootfs: Path, json_path: Path | None) -> None:
    work = Path(tempfile.mkdtemp(prefix="faasd-bench-"))
    settings = Settings(data_dir=work / "data", run_dir=work / "run", cache_dir=work / "cache")
    try:
        asyncio.run(bench_isolation(1, rootfs, settings))  # warm-up, not counted
        samples = asyncio.run(bench_isolation(n, rootfs, settings))
        restores = asyncio.run(bench_restore(n, rootfs, settings))
    finally:
        subprocess.run(["umount", "-R", "-l", str(work)], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    rows = {"faasd run, runc": _stats(samples["runc"]), "faasd run, gvisor (runsc)": _stats(samples["runsc"])}
    ratio = rows["faasd run, gvisor (runsc)"]["p50"] / rows["faasd run, runc"]["p50"]
    print_rows(f"cold start of {' '.join(HELLO)!r} by isolation, n={n} each, interleaved (ms)", rows)
    print(f"ratio gvisor/runc: p50 {ratio:.2f}x")
    rrows = {
        f"{label}, {name}": _stats(restores[f"{what}-{rt}"])
        for rt, name in (("runc", "runc (CRIU)"), ("runsc", "gvisor (runsc)"))
        for what, label in (("cold", "cold to 1st line"), ("restore", "restore to 1st line"))
    }
    print_rows(f"cold start vs restore of a ticking python, n={n} each, interleaved (ms)", rrows)
    for rt in ("runc", "runsc"):
        ratio_rt = statistics.median(restores[f"restore-{rt}"]) / statistics.median(restores[f"cold-{rt}"])
        print(f"{rt}: restore/cold p50 {ratio_rt:.2f}x")
    gv_over_runc = statistics.median(restores["restore-runsc"]) / statistics.median(restores["restore-runc"])
    print(f"restore gvisor/runc p50 {gv_over_runc:.2f}x")
    out = json_path or Path(__file__).parent / "results" / "cold_start_isolation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "cold_start_isolation", "command": HELLO, "n": n, "ms": rows,
        "ratio_gvisor_over_runc_p50": ratio, "samples_ms": samples,
        "restore_ms": rrows, "restore_samples_ms": restores,
        "ratio_restore_gvisor_over_runc_p50": gv_over_runc,
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(), "load": os.getloadavg()},
        "runsc": subprocess.run(["runsc", "--version"], capture_output=True, text=True).stdout.split("\n")[0],
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, indent=2))
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument(
        "--rootfs",
        type=Path,
        default=Path(os.environ.get("FAASD_TEST_ROOTFS_DIR", "/var/lib/faasd-dev")) / "rootfs-python",
    )
    ap.add_argument("--json", type=Path, default=None, help="default: bench/results/cold_start.json")
    ap.add_argument("--isolation-only", action="store_true", help="only gVisor vs runc (and gVisor restore)")
    args = ap.parse_args()
    if os.geteuid() != 0 or shutil.which("runc") is None:
        raise SystemExit("needs root and runc")
    if not (args.rootfs / "usr/bin/python3").exists():
        raise SystemExit(f"{args.rootfs} is not a python rootfs (run the test suite once to build it)")
    if args.isolation_only:
        main_isolation(args.n, args.rootfs, args.json)
        return
    args.json = args.json or Path(__file__).parent / "results" / "cold_start.json"
    work = Path(tempfile.mkdtemp(prefix="faasd-bench-"))
    settings = Settings(data_dir=work / "data", run_dir=work / "run", cache_dir=work / "cache")
    try:
        # warm-up (page cache, imports), not counted
        asyncio.run(bench_faasd(2, args.rootfs, settings, work / "warm"))
        totals, phases = asyncio.run(bench_faasd(args.n, args.rootfs, settings, work))
        raw, faasd_ms = totals["raw"], totals["faasd"]
        loop_ms = asyncio.run(bench_loop(args.n, args.rootfs, settings))
    finally:
        subprocess.run(["umount", "-R", "-l", str(work)], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    rows: dict[str, dict[str, float]] = {
        "faasd SandboxManager.run": _stats(faasd_ms),
        "faasd run, background teardown": _stats(totals["faasd_background"]),
        "  its teardown, after the answer": _stats(totals["teardown_after"]),
        "raw runc run": _stats(raw),
        "faasd run, disk_backend=loop": _stats(loop_ms),
    }
    for k, v in phases.items():
        rows[f"  faasd phase: {k}"] = _stats(v)
    ratio = {
        "p50": rows["faasd SandboxManager.run"]["p50"] / rows["raw runc run"]["p50"],
        "mean": rows["faasd SandboxManager.run"]["mean"] / rows["raw runc run"]["mean"],
        "p50_background_teardown": (
            rows["faasd run, background teardown"]["p50"] / rows["raw runc run"]["p50"]
        ),
    }
    print(f"cold start of {' '.join(HELLO)!r}, n={args.n} each (ms)")
    print(f"{'':34} {'p50':>8} {'p90':>8} {'mean':>8} {'min':>8} {'max':>8}")
    for name, st in rows.items():
        print(
            f"{name:34} {st['p50']:8.1f} {st['p90']:8.1f} {st['mean']:8.1f} {st['min']:8.1f} {st['max']:8.1f}"
        )
    print(f"ratio faasd/raw: p50 {ratio['p50']:.2f}x, mean {ratio['mean']:.2f}x; "
          f"background teardown p50 {ratio['p50_background_teardown']:.2f}x")
    result: dict[str, Any] = {
        "benchmark": "cold_start",
        "command": HELLO,
        "n": args.n,
        "rootfs": str(args.rootfs),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "runc": subprocess.run(["runc", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
        "ms": rows,
        "ratio_faasd_over_raw": ratio,
        "samples_ms": {**totals, "faasd_loop": loop_ms},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    if shutil.which("runsc") is not None:
        main_isolation(args.n, args.rootfs, None)


if __name__ == "__main__":
    main()
