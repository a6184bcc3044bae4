"""Warm-path load through every way into a function, driven by a native load generator (``hey``).

Usage (root): ``.venv/bin/python bench/load.py [--levels 1,8,64] [--seconds-per-level 1.0] [--rounds 2]``

Same run, same client, same request (``POST`` with a 5-byte body, keep-alive connections), against:

* **uvicorn**: bare Starlette/uvicorn hello endpoint (``bench/hello_app.py``, one process) — the baseline;
* **openfaas**: ``POST /function/<name>`` through a real ``faasd`` daemon (auth on; the route itself is open
  unless ``FAASD_FUNCTION_AUTH``, so no key is sent and the gateway may hand the connection to the worker);
* **api**: ``POST /api/v1/functions/<name>/invoke`` through the same daemon, with the key (the SDK's and
  ``faas``'s way): relayed to the worker, the daemon checking and removing the key (``faasd.api.relay``);
* **direct**: ``POST http://<direct address>/`` (the function's ``lo:faas`` address, no gateway).

The function is the Python hello handler, mode ``cached``, ``scale`` min 1 max 4 (a warm worker is up).
At each concurrency level every target is driven ``--rounds`` times in rotating order (so each sees the
same machine load) for a fixed number of requests sized from a short calibration; latencies are per
request from ``hey -o csv`` (0.1 ms resolution), throughput is requests / wall time of the batch.
Any failed request (connection error or a status other than 200) is reported and the run exits 1.
Writes ``bench/results/load.json``. The machine may be shared: load averages are recorded.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    Row,
    deploy_hello,
    load_avg,
    print_table,
    require_root,
    start_daemon,
    summarize,
    write_result,
)
from warm_invoke import start_uvicorn

BODY = "hello"


@dataclass
class Batch:
    latencies_ms: list[float] = field(default_factory=list)
    requests: int = 0
    failures: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    def add(self, other: Batch) -> None:
        self.latencies_ms += other.latencies_ms
        self.requests += other.requests
        self.failures += other.failures
        for k, v in other.statuses.items():
            self.statuses[k] = self.statuses.get(k, 0) + v
        self.wall_s += other.wall_s

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s if self.wall_s else 0.0


def hey(url: str, n: int, c: int, headers: dict[str, str]) -> Batch:
    """``n`` POSTs with ``c`` in flight; hey's CSV lists every answered request (errors are left out)."""
    n = max(n, c) // c * c  # hey runs n // c requests per connection
    cmd = ["hey", "-n", str(n), "-c", str(c), "-m", "POST", "-d", BODY, "-o", "csv"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    started = time.perf_counter()
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=False, timeout=600)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"hey failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    b = Batch(requests=n)
    ends: list[float] = []
    for row in csv.DictReader(io.StringIO(out.stdout)):
        status = row["status-code"]
        b.statuses[status] = b.statuses.get(status, 0) + 1
        t = float(row["response-time"])
        ends.append(float(row["offset"]) + t)
        if status == "200":
            b.latencies_ms.append(t * 1000)
    answered = sum(b.statuses.values())
    b.failures = (n - answered) + (answered - b.statuses.get("200", 0))
    if n - answered:
        b.statuses["no answer"] = n - answered
    # wall time of the requests themselves (hey's own start-up excluded), bounded by the process' wall time
    b.wall_s = min(max(ends), wall) if ends else wall
    return b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="1,8,64")
    ap.add_argument("--seconds-per-level", type=float, default=1.0, help="target time per target per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--targets", default="uvicorn,openfaas,api,direct")
    ap.add_argument("--json", type=Path, default=None, help="result file (default bench/results/load.json)")
    args = ap.parse_args()
    require_root()
    if shutil.which("hey") is None:
        raise SystemExit("hey is not installed (scripts/setup-system.sh installs it: apt-get install hey)")
    levels = [int(x) for x in args.levels.split(",")]
    wanted = args.targets.split(",")
    load_start = load_avg()

    uv_proc, uv_url = start_uvicorn()
    server = start_daemon()
    tmp = Path(tempfile.mkdtemp(prefix="faasd-load-"))
    try:
        name = f"load-{uuid.uuid4().hex[:6]}"
        deploy_hello(server, name, tmp / "src", mode="cached", min_replicas=1, max_replicas=4)
        auth = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
        fn = httpx.get(f"{server.url}/api/v1/functions/{name}", headers=auth, timeout=30).json()
        targets: dict[str, tuple[str, dict[str, str]]] = {
            "uvicorn": (uv_url, {}),
            # The OpenFaaS route is open (FAASD_FUNCTION_AUTH off), as OpenFaaS clients call it: no key sent,
            # so the gateway may hand the connection to the worker. The API route needs the key: relayed.
            "openfaas": (f"{server.url}/function/{name}", {}),
            "api": (f"{server.url}/api/v1/functions/{name}/invoke", auth),
        }
        if fn.get("direct_url"):
            targets["direct"] = (fn["direct_url"], {})
        elif "direct" in wanted:
            print("the function has no direct address: the direct target is skipped", file=sys.stderr)
        targets = {k: v for k, v in targets.items() if k in wanted}

        for url, headers in targets.values():  # warm-up (and a check that every target answers)
            w = hey(url, 200, 8, headers)
            if w.failures:
                raise SystemExit(f"warm-up against {url} failed: {w.statuses}")

        results: dict[str, dict[str, Any]] = {}
        failed = False
        for c in levels:
            # size batches so the fastest-known target runs about --seconds-per-level per round
            probe = hey(targets.get("uvicorn", next(iter(targets.values())))[0], max(50, 20 * c), c, {})
            n = max(c * 10, int(probe.rps * args.seconds_per_level))
            per: dict[str, Batch] = {k: Batch() for k in targets}
            order = list(targets)
            for r in range(args.rounds):
                for k in order[r % len(order) :] + order[: r % len(order)]:
                    url, headers = targets[k]
                    per[k].add(hey(url, n, c, headers))
            for k, b in per.items():
                s = summarize(b.latencies_ms)
                results[f"{k}@{c}"] = {
                    "target": k,
                    "concurrency": c,
                    "requests": b.requests,
                    "failures": b.failures,
                    "statuses": b.statuses,
                    "rps": round(b.rps, 1),
                    "p50_ms": s.get("p50"),
                    "p99_ms": s.get("p99"),
                    "mean_ms": s.get("mean"),
                }
                if b.failures:
                    failed = True
                    msg = f"FAILED: {k} at {c} in flight: {b.failures} of {b.requests}: {b.statuses}"
                    print(msg, file=sys.stderr)
        rows: list[Row] = []
        for c in levels:
            base = results.get(f"uvicorn@{c}")
            for k in targets:
                if k == "uvicorn":
                    continue
                me = results[f"{k}@{c}"]
                rows.append(Row(f"{k} @{c}: throughput", me["rps"], base and base["rps"], "req/s", "uvicorn"))
                rows.append(Row(f"{k} @{c}: p50", me["p50_ms"], base and base["p50_ms"], "ms", "uvicorn"))
                rows.append(Row(f"{k} @{c}: p99", me["p99_ms"], base and base["p99_ms"], "ms", "uvicorn"))
        print_table("warm load (hey, keep-alive, POST 5 bytes; ratio = target / bare uvicorn)", rows)
        path = write_result(
            "load",
            {
                "tool": subprocess.run(["hey", "-h"], capture_output=True, text=True).stderr.splitlines()[:1],
                "levels": levels,
                "rounds": args.rounds,
                "results": results,
                "rows": rows,
                "failed": failed,
                "load_avg": {"start": load_start, "end": load_avg()},
            },
            path=args.json,
        )
        print(f"written to {path}")
        return 1 if failed else 0
    finally:
        server.stop()
        uv_proc.terminate()
        uv_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
