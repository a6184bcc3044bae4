"""What a user namespace costs: cold start (``SandboxManager.run``) and CRIU restore, ``userns`` off and on.

Usage (root): ``.venv/bin/python bench/userns_cost.py [-n 15] [--rootfs DIR] [--json PATH]``

Runs are interleaved (off, on, off, on, ...) on the same rootfs and settings so load drifts hit both alike.
Reported per mode: the whole run (create + start + wait + destroy) and its create and destroy phases,
medians and p90, plus the same-run ratio on/off; and ``restore``: ``SandboxManager.restore`` of a sleeping
python3 checkpointed once per mode (``runc checkpoint --leave-running``), interleaved likewise. Any failed
run fails the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from faasd.config import Settings
from faasd.runtime import SandboxManager, SandboxSpec
from faasd.runtime.sandbox import Sandbox

HELLO = ["python3", "-c", 'print("hello")']


def _p(ms: list[float], q: float) -> float:
    s = sorted(ms)
    return s[min(len(s) - 1, int(q * len(s)))]


async def _one(manager: SandboxManager, rootfs: Path, userns: bool) -> dict[str, float]:
    spec = SandboxSpec(id=f"fd-bench-{uuid.uuid4().hex[:10]}", lowers=[rootfs], args=HELLO, userns=userns)
    t0 = time.perf_counter()
    sb = await manager.create(spec, stdin_pipe=False)
    t1 = time.perf_counter()
    try:
        await sb.start()
        status = await sb.wait(30)
        if status.exit_code != 0 or sb.stdout() != b"hello\n":
            raise SystemExit(f"run failed (userns={userns}): {status} {sb.stderr()!r}")
        t2 = time.perf_counter()
    finally:
        await sb.destroy()
    t3 = time.perf_counter()
    return {"total": (t3 - t0) * 1000, "create": (t1 - t0) * 1000, "start_wait": (t2 - t1) * 1000,
            "destroy": (t3 - t2) * 1000}


SLEEPER = ["python3", "-c", "import time; time.sleep(600)"]


async def _checkpoint(
    manager: SandboxManager, rootfs: Path, userns: bool, dest: Path
) -> tuple[Path, dict[str, Any]]:
    spec = SandboxSpec(id=f"fd-bench-{uuid.uuid4().hex[:10]}", lowers=[rootfs], args=SLEEPER, userns=userns)
    sb = await manager.create(spec, stdin_pipe=False)
    try:
        await sb.start()
        await asyncio.sleep(0.3)
        work = dest.with_name(dest.name + "-work")
        await sb.runtime.checkpoint(sb.id, dest, work_path=work, leave_running=True)
        config: dict[str, Any] = json.loads(sb.config_path.read_text())
        return dest, {"config": config, "bundle": str(sb.bundle), "id": sb.id}
    finally:
        await sb.destroy()


async def _restore(
    manager: SandboxManager, rootfs: Path, userns: bool, image: Path, dumped: dict[str, Any]
) -> float:
    new_id = f"fd-bench-{uuid.uuid4().hex[:10]}"

    def rewrite(new: Sandbox) -> dict[str, Any]:
        text = json.dumps(dumped["config"]).replace(dumped["bundle"], "@@B@@").replace(dumped["id"], new.id)
        return dict(json.loads(text.replace("@@B@@", str(new.bundle))))

    spec = SandboxSpec(id=new_id, lowers=[rootfs], args=SLEEPER, userns=userns)
    t0 = time.perf_counter()
    sb = await manager.restore(spec, image, rewrite)
    ms = (time.perf_counter() - t0) * 1000
    if sb.status != "running":
        raise SystemExit(f"restore failed (userns={userns}): {sb.status}")
    await sb.destroy()
    return ms


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=15)
    ap.add_argument("--rootfs", type=Path, default=Path("/var/lib/faasd-dev/rootfs-python"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="faasd-bench-userns-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", run_dir=Path(tmp) / "run", auth=False)
        manager = SandboxManager(settings)
        for mode in (False, True):  # warm-up, not counted
            await _one(manager, args.rootfs, mode)
        runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        for _ in range(args.n):
            for mode in (False, True):
                runs["on" if mode else "off"].append(await _one(manager, args.rootfs, mode))
        images = {mode: await _checkpoint(manager, args.rootfs, mode, Path(tmp) / f"criu-{mode}")
                  for mode in (False, True)}
        restores: dict[str, list[float]] = {"off": [], "on": []}
        for mode in (False, True):  # warm-up
            await _restore(manager, args.rootfs, mode, *images[mode])
        for _ in range(args.n):
            for mode in (False, True):
                ms = await _restore(manager, args.rootfs, mode, *images[mode])
                restores["on" if mode else "off"].append(ms)
        await manager.cleanup_orphans()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for mode, rs in runs.items():
        out[mode] = {
            k: {"p50": statistics.median(r[k] for r in rs), "p90": _p([r[k] for r in rs], 0.9)}
            for k in rs[0]
        }
        out[mode]["restore"] = {"p50": statistics.median(restores[mode]), "p90": _p(restores[mode], 0.9)}
    print(f"n={args.n} per mode, interleaved; ms")
    print(f"{'phase':<12}{'off p50':>10}{'on p50':>10}{'on/off':>8}{'off p90':>10}{'on p90':>10}")
    for k in out["off"]:
        off, on = out["off"][k], out["on"][k]
        print(f"{k:<12}{off['p50']:>10.1f}{on['p50']:>10.1f}{on['p50'] / off['p50']:>8.2f}"
              f"{off['p90']:>10.1f}{on['p90']:>10.1f}")
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "results": out}, indent=1))


if __name__ == "__main__":
    if sys.platform != "linux":
        raise SystemExit("linux only")
    asyncio.run(main())
