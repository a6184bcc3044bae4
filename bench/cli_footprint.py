"""How long ``faas`` commands take, wall clock, next to the Python interpreter starting (same run).

Usage: ``.venv/bin/python bench/cli_footprint.py [-n 15] [--url URL --api-key KEY] [--before-src DIR]
[--json PATH]``

Each command is run as a fresh process the way the ``faas`` console script runs it (``from
faasd.cli.main import main; main()``), ``n`` times, interleaved with the baselines so load drifts hit all
alike. Baselines (same run, same way): ``python -c pass`` (interpreter start: the floor of any Python
CLI) and ``python -c 'import httpx; httpx.get(url)'`` (the least a Python client of the daemon does).
Without ``--url`` a private daemon is started (as root; no base images) and stopped afterwards.
Commands that talk to the daemon (``faas ls``, ``faas health``) are held to the 200 ms target of issue
11; ``faas --version`` does not talk to it. ``--before-src DIR`` (e.g. ``git archive <commit> src | tar -x
-C DIR``) also runs the ``faas`` commands of that source tree, interleaved: a same-run before/after.
A command that exits non-zero fails the benchmark.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, load_avg, percentile, print_table, summarize, write_result

TARGET_MS = 200.0
FAAS = "import re, sys; from faasd.cli.main import main; sys.argv[0] = 'faas'; sys.exit(main())"
FAAS_BEFORE = (  # the console script of trees without faasd.cli.main:main
    "import re, sys; import faasd.cli.main as m; sys.argv[0] = 'faas'; sys.exit(getattr(m, 'main', m.app)())"
)
FAAS_COMMANDS = ("--version", "health", "ls")


def _commands(url: str, before: Path | None) -> dict[str, tuple[list[str], str | None]]:
    """name -> (argv, PYTHONPATH override)."""
    py = sys.executable
    get = f"import httpx; httpx.get({url + '/healthz'!r}).raise_for_status()"
    cmds: dict[str, tuple[list[str], str | None]] = {
        "python -c pass": ([py, "-c", "pass"], None),
        "python httpx GET /healthz": ([py, "-c", get], None),
    }
    for c in FAAS_COMMANDS:
        cmds[f"faas {c}"] = ([py, "-c", FAAS, c], None)
        if before is not None:
            cmds[f"faas {c} (before)"] = ([py, "-c", FAAS_BEFORE, c], str(before))
    return cmds


def _run_once(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(argv, env=env, capture_output=True, check=False)
    ms = (time.perf_counter() - t0) * 1000
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace")[-2000:]
        raise SystemExit(f"{argv[-1]!r} failed ({res.returncode}): {err}")
    return ms


def measure(url: str, api_key: str | None, n: int, before: Path | None) -> dict[str, list[float]]:
    env = {**os.environ, "FAAS_URL": url}
    if api_key:
        env["FAAS_API_KEY"] = api_key
    cmds = _commands(url, before)
    envs = {name: env if pp is None else {**env, "PYTHONPATH": pp} for name, (_, pp) in cmds.items()}
    for name, (argv, _) in cmds.items():  # warm the page cache and .pyc files; not counted
        _run_once(argv, envs[name])
    samples: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(n):
        for name, (argv, _) in cmds.items():
            samples[name].append(_run_once(argv, envs[name]))
    return samples


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=15)
    p.add_argument("--url", help="an already running daemon (default: start a private one)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--before-src", type=Path, default=None, help="a src/ dir of faasd to compare with")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    load_start = load_avg()
    t0 = time.monotonic()
    if args.url:
        samples = measure(args.url, args.api_key, args.n, args.before_src)
    else:
        from _common import require_root, start_daemon

        require_root()
        with start_daemon(base_images="none") as server:
            samples = measure(server.url, server.api_key, args.n, args.before_src)
    ms = {name: summarize(s) for name, s in samples.items()}
    floor = statistics.median(samples["python -c pass"])
    httpx_base = statistics.median(samples["python httpx GET /healthz"])
    rows = [
        Row("python httpx GET /healthz p50", httpx_base, floor, "ms", "python -c pass"),
    ]
    verdicts = {}
    for name in (f"faas {c}" for c in FAAS_COMMANDS):
        med = statistics.median(samples[name])
        rows.append(Row(f"{name} p50", med, floor, "ms", "python -c pass"))
        rows.append(Row(f"{name} p50 vs httpx client", med, httpx_base, "ms", "python httpx GET"))
        if f"{name} (before)" in samples:
            old = statistics.median(samples[f"{name} (before)"])
            rows.append(Row(f"{name} p50, this tree vs --before-src", med, old, "ms", "before"))
        if name != "faas --version":
            verdicts[name] = {"p50_ms": round(med, 1), "p90_ms": round(percentile(samples[name], 90), 1),
                              "target_ms": TARGET_MS, "met": med <= TARGET_MS}
    print_table(f"faas command footprint (n={args.n}, interleaved)", rows)
    for name, v in verdicts.items():
        verdict = "met" if v["met"] else "NOT met"
        print(f"{name}: p50 {v['p50_ms']} ms, target <= {TARGET_MS:.0f} ms: {verdict}")
    out = write_result(
        "cli_footprint",
        {"n": args.n, "before_src": str(args.before_src) if args.before_src else None,
         "duration_s": round(time.monotonic() - t0, 1), "loadavg_start": load_start,
         "loadavg_end": load_avg(), "ms": ms, "target": verdicts, "rows": rows},
        path=args.json,
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
