"""Image import into a fresh store vs ``podman load``; faasd cold start vs ``podman run --rm``.

Usage (root): ``.venv/bin/python bench/image_import.py [--rounds 3] [--run-n 5] [--archive PATH]``

* **import**: the cached ``faasd/python`` base image archive (OCI archive in
  ``/var/cache/faasd/base/python-<hash>.tar``) imported with ``ImageStore.import_archive`` into a fresh
  data dir (blobs verified and stored, layers unpacked), next to ``podman load`` of the same archive
  into a fresh private store (``--root``/``--runroot`` under a temp dir, ``--storage-driver overlay``;
  the host's podman state is untouched). Interleaved, ``--rounds`` each.
* **run**: ``python3 -c 'print("hello")'`` on that image: ``SandboxManager.run`` (overlay on the
  imported layers, netns, seccomp, limits, runc, teardown) next to ``podman run --rm --network none``
  (``--runtime runc``, cgroupfs, file events; includes podman's own CLI start-up, conmon and its
  storage bookkeeping).

Prints a table and writes ``bench/results/image_import.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, load_avg, print_table, require_root, summarize, write_result

from faasd.config import Settings
from faasd.images.store import Image, ImageStore
from faasd.runtime import SandboxManager, SandboxSpec

HELLO = ["python3", "-c", 'print("hello")']
REF = "bench/python:import"


def default_archive() -> Path:
    found = sorted(Path("/var/cache/faasd/base").glob("python-*.tar"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit("no /var/cache/faasd/base/python-*.tar: start faasd once (it builds the base image)")
    return found[-1]


class Podman:
    """podman with a private store under ``base`` (never the host's)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.argv = [
            "podman", "--root", str(base / "root"), "--runroot", str(base / "runroot"),
            "--storage-driver", "overlay", "--events-backend", "file", "--cgroup-manager", "cgroupfs",
            "--runtime", "runc", "--tmpdir", str(base / "tmp"),
        ]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([*self.argv, *args], capture_output=True, text=True, check=False)
        if check and res.returncode != 0:
            raise SystemExit(f"podman {' '.join(args)} failed ({res.returncode}): {res.stderr[-800:]}")
        return res

    def destroy(self) -> None:
        self.run("system", "reset", "--force", check=False)
        subprocess.run(["umount", "-R", "-l", str(self.base)], capture_output=True, check=False)
        shutil.rmtree(self.base, ignore_errors=True)


class PhaseClock:
    """Time spent per import phase (``read``/``blob``/``unpack``), from the store's progress events."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._phase: str | None = None
        self._since = time.perf_counter()

    def __call__(self, event: Any) -> None:
        if event.phase != self._phase:
            self.lap()
            self._phase = event.phase

    def lap(self) -> None:
        now = time.perf_counter()
        if self._phase is not None:
            self.ms[self._phase] = round(self.ms.get(self._phase, 0.0) + (now - self._since) * 1000, 1)
        self._since = now


def faasd_import(archive: Path, base: Path) -> tuple[float, ImageStore, Image, dict[str, float]]:
    store = ImageStore(Settings(data_dir=base / "data", run_dir=base / "run", cache_dir=base / "cache"))
    clock = PhaseClock()
    t0 = time.perf_counter()
    image = store.import_archive(archive, ref=REF, progress=clock)
    ms = (time.perf_counter() - t0) * 1000
    clock.lap()
    return ms, store, image, clock.ms


def podman_load(archive: Path, base: Path) -> tuple[float, Podman, str]:
    pm = Podman(base)
    t0 = time.perf_counter()
    res = pm.run("load", "--quiet", "--input", str(archive))
    ms = (time.perf_counter() - t0) * 1000
    # "Loaded image: localhost/faasd/python:3.11" (name embedded in the archive)
    name = res.stdout.strip().splitlines()[-1].split(": ", 1)[-1].split(",")[0]
    return ms, pm, name


async def faasd_runs(settings: Settings, store: ImageStore, image: Image, n: int) -> list[float]:
    manager = SandboxManager(settings)
    lowers = store.layer_dirs(image)
    out = []
    for _ in range(n):
        spec = SandboxSpec(id=f"fd-bench-{uuid.uuid4().hex[:10]}", lowers=lowers, image_config=image.config,
                           args=HELLO)
        t0 = time.perf_counter()
        res = await manager.run(spec, timeout_s=60)
        out.append((time.perf_counter() - t0) * 1000)
        if res.exit_code != 0 or res.stdout.strip() != b"hello":
            raise SystemExit(f"faasd run failed: {res}")
    return out


def podman_runs(pm: Podman, image: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        res = pm.run("run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024",
                     "--ulimit", "nproc=4096:4096", image, *HELLO)
        out.append((time.perf_counter() - t0) * 1000)
        if res.stdout.strip() != "hello":
            raise SystemExit(f"podman run printed {res.stdout!r}: {res.stderr[-500:]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="imports per side (each into a fresh store)")
    ap.add_argument("--run-n", type=int, default=5, help="cold runs per side (0 to skip)")
    ap.add_argument("--archive", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="default: bench/results/image_import.json")
    args = ap.parse_args()
    require_root()
    if shutil.which("podman") is None:
        raise SystemExit("podman is not installed (apt-get install podman)")
    archive = args.archive or default_archive()
    load_start = load_avg()
    work = Path(tempfile.mkdtemp(prefix="fdb-img-", dir="/var/tmp"))
    f_ms: list[float] = []
    p_ms: list[float] = []
    run_f: list[float] = []
    run_p: list[float] = []
    image_size = 0
    phase_ms: list[dict[str, float]] = []
    try:
        for r in range(args.rounds):
            last = r == args.rounds - 1
            ms, store, image, phases = faasd_import(archive, work / f"faasd-{r}")
            f_ms.append(ms)
            phase_ms.append(phases)
            image_size = image.size
            ms, pm, pname = podman_load(archive, work / f"podman-{r}")
            p_ms.append(ms)
            if last and args.run_n > 0:
                settings = Settings(data_dir=work / f"faasd-{r}" / "data", run_dir=work / "run",
                                    cache_dir=work / "cache")
                asyncio.run(faasd_runs(settings, store, image, 1))  # warm-up
                podman_runs(pm, pname, 1)
                run_f = asyncio.run(faasd_runs(settings, store, image, args.run_n))
                run_p = podman_runs(pm, pname, args.run_n)
            pm.destroy()
            shutil.rmtree(work / f"faasd-{r}", ignore_errors=True)
    finally:
        for d in work.glob("podman-*"):
            Podman(d).destroy()
        subprocess.run(["umount", "-R", "-l", str(work)], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    fi, pi, fr, pr = summarize(f_ms), summarize(p_ms), summarize(run_f), summarize(run_p)
    rows = [
        Row("import python base image (fresh store) p50", fi["p50"], pi["p50"], "ms", "podman load"),
    ]
    if run_f:
        rows.append(Row("run python print on that image p50", fr["p50"], pr["p50"], "ms", "podman run --rm"))
    print_table(f"image import / run (archive {archive.name}, {archive.stat().st_size / 1e6:.0f} MB; "
                f"load {load_start} -> {load_avg()}, shared 2-core machine)", rows)
    out = write_result(
        "image_import",
        {
            "archive": str(archive),
            "archive_bytes": archive.stat().st_size,
            "image_size_bytes": image_size,
            "config": {"rounds": args.rounds, "run_n": args.run_n,
                       "podman": "private --root/--runroot, overlay, runc, cgroupfs, --network none"},
            "loadavg_start": load_start,
            "loadavg_end": load_avg(),
            "rows": rows,
            "import_ms": {"faasd": fi, "podman_load": pi},
            "faasd_import_phases_ms": phase_ms,
            "run_ms": {"faasd_sandbox_run": fr, "podman_run": pr},
            "samples_ms": {"import_faasd": f_ms, "import_podman": p_ms, "run_faasd": run_f,
                           "run_podman": run_p},
        },
        path=args.json,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
