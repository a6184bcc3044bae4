"""The daemon's CPU per request a worker served on a handed-over connection, by phase.

Usage: ``.venv/bin/python bench/gateway_records.py [-n 20000] [--rounds 3] [--json PATH]``

Under gateway load (``bench/load.py``, the ``openfaas`` target) the daemon serves no request itself: it
reads the workers' reports and keeps the books (execution records, metrics, access log). That work shares
the machine's cores with the workers and the load generator, so its CPU per request bounds the gateway's
throughput. This benchmark feeds the daemon's own report path (``gateway_channel`` decoding →
``GatewayHandoff.reported`` → ``ExecutionService.record_handed`` → the write-behind journal on a real SQLite
database → the access log as JSON lines) with reports shaped as the Python agent sends them for ``hey``'s
requests (64 records a frame), and measures process CPU time per record. No sandbox is started: the
function is deployed with ``scale.min`` 0 and never invoked. The process's collector is set as the
daemon's once started (``faasd.daemon.settle_heap``: start-up objects frozen, raised thresholds). Variants,
each in a fresh platform and alternated ``--rounds`` times (medians):

* ``decode``: the frames parsed into requests only;
* ``+ record``: and recorded (journal rows made, metrics), rows not written, access log off;
* ``+ journal``: and the rows written;
* ``full``: and the access log written (to ``/dev/null``).

Writes ``bench/results/gateway_records.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, load_avg, print_table, write_result

VARIANTS = ("decode", "+ record", "+ journal", "full")
BATCH = 64


class _NoWorkers:
    """The platform's worker factory: this benchmark never starts a worker."""

    async def start(self, config: Any) -> Any:
        raise RuntimeError("gateway_records starts no worker")

    async def cleanup_orphans(self) -> list[str]:
        return []


def _record(i: int) -> dict[str, Any]:
    """A report record as the Python agent sends it for ``hey -m POST -d hello`` (faasd_direct._gated)."""
    return {
        "id": f"ex_{i:024x}",
        "method": "POST",
        "path": "/function/hello",
        "query": "",
        "headers": {"user-agent": "hey/0.0.1", "content-type": "text/html", "accept-encoding": "gzip"},
        "final": {
            "type": "result",
            "status": 200,
            "headers": [["content-type", "text/plain; charset=utf-8"]],
            "run_ms": 0.008,
            "exit_code": None,
        },
        "t": time.time(),
        "ms": 0.5,
        "keep": True,
        "status": 200,
        "lens": [5, 5, 0, 0],
    }


def _frames(n: int) -> list[tuple[bytes, bytes]]:
    out = []
    for start in range(0, n, BATCH):
        records = [_record(start + i) for i in range(min(BATCH, n - start))]
        header = {"type": "report", "records": records, "body_len": 10 * len(records)}
        out.append((json.dumps(header).encode(), b"hellohello" * len(records)))
    return out


async def _one(variant: str, n: int) -> float:
    """CPU microseconds per record of ``variant`` (a fresh platform and database)."""
    from faasd.api.accesslog import AccessLog
    from faasd.api.fastpath import RequestCounter
    from faasd.api.handoff import GatewayHandoff
    from faasd.api.logging import JsonFormatter
    from faasd.config import Settings
    from faasd.daemon import settle_heap
    from faasd.platform.core import Platform, PlatformOptions
    from faasd.platform.functions import FunctionSpec
    from faasd.runtime.gateway_channel import GatewayChannel, _requests

    thresholds = gc.get_threshold()
    with tempfile.TemporaryDirectory(prefix="faasd-gwrec-") as tmp:
        root = Path(tmp)
        settings = Settings(
            data_dir=root / "data", run_dir=root / "run", cache_dir=root / "cache", auth=False
        )
        settings.data_dir.mkdir(parents=True)
        plat = Platform(settings, _NoWorkers(), options=PlatformOptions(poll_interval_s=0.05))
        logger = logging.getLogger(f"faasd.bench.access.{os.getpid()}")
        try:
            spec = {"name": "hello", "image": "faasd/python:latest", "scale": {"min": 0, "max": 4}}
            await plat.deploy(FunctionSpec.model_validate(spec))
            settle_heap()  # the daemon's collector as it runs once started (faasd.daemon.settle_heap)
            with open(os.devnull, "w") as devnull:
                handler = logging.StreamHandler(devnull)
                handler.setFormatter(JsonFormatter())
                logger.handlers[:] = [handler]
                logger.propagate = False
                logger.setLevel(logging.INFO if variant == "full" else logging.WARNING)
                journal = plat.executions.journal
                if variant in ("decode", "+ record"):
                    journal._write = lambda ops: None  # type: ignore[method-assign]
                handoff = GatewayHandoff(plat, AccessLog(logger), RequestCounter(plat.metrics.http_requests))
                channel = GatewayChannel.__new__(GatewayChannel)  # only its function is read
                channel.function = "hello"
                frames = _frames(n)
                t0 = time.process_time()
                for head, body in frames:
                    reqs, _ = _requests(json.loads(head)["records"], body, set())
                    if variant != "decode":
                        handoff.reported(channel, reqs)
                    await asyncio.sleep(0)  # the journal's and access log's timers run as in the daemon
                journal.flush()
                handoff.access.flush()
                cpu = time.process_time() - t0
                if variant in ("+ journal", "full"):
                    with plat.db.engine.connect() as conn:
                        from sqlalchemy import text

                        written = conn.execute(text("SELECT count(*) FROM executions")).scalar_one()
                    if written != n:
                        raise SystemExit(f"{variant}: {written} of {n} records written")
        finally:  # also when a check fails: the platform's database and threads are closed
            logger.handlers[:] = []
            await plat.close()
            gc.unfreeze()  # the next variant's platform is frozen afresh, this one collected
            gc.set_threshold(*thresholds)
    return cpu / n * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=20000, help="records per variant and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    logging.getLogger("faasd").setLevel(logging.WARNING)
    load_start = load_avg()
    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for v in VARIANTS:
            samples[v].append(asyncio.run(_one(v, args.n)))
    med = {v: statistics.median(s) for v, s in samples.items()}
    phases = {
        "decode": med["decode"],
        "record (journal rows, metrics)": med["+ record"] - med["decode"],
        "journal write (SQLite)": med["+ journal"] - med["+ record"],
        "access log": med["full"] - med["+ journal"],
    }
    rows = [Row(f"{name}, CPU per record", us, None, "us") for name, us in phases.items()]
    rows.append(Row("the daemon's CPU per handed request (full)", med["full"], None, "us"))
    print_table(
        f"gateway records: daemon CPU per handed request (n={args.n}, medians of {args.rounds})", rows
    )
    out = write_result(
        "gateway_records",
        {
            "n": args.n,
            "rounds": args.rounds,
            "batch": BATCH,
            "us_per_record": samples,
            "medians_us": med,
            "phases_us": phases,
            "loadavg_start": load_start,
            "loadavg_end": load_avg(),
            "rows": rows,
        },
        path=args.json,
    )
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
