"""Warm and cold invocations through the real daemon over HTTP, next to bare uvicorn and raw runc.

Usage (root): ``.venv/bin/python bench/warm_invoke.py [-n 1000] [-c 8] [--seq-n 200] [--cold-n 10]``

* **warm**: a python hello function (``mode=cached``, ``min=1``) invoked with ``POST
  /api/v1/functions/<name>/invoke`` through a real ``faasd`` daemon on loopback (auth on, as
  deployed), next to a bare Starlette hello endpoint on uvicorn (``bench/hello_app.py``) in another
  process. Same client (httpx.AsyncClient), same load pattern, measured interleaved in two halves so
  both sides see the same machine load: ``--seq-n`` requests one at a time (latency), then ``-n``
  requests with ``-c`` in flight (latency under load, throughput).
* **cold**: an ``ephemeral`` function (a fresh sandbox per request: overlay, netns, runc, python agent
  start, handler import, reply; the sandbox is torn down after the answer) invoked ``--cold-n`` times,
  next to ``runc run`` of ``python3 -c 'print("hello")'`` on a bare bundle (``bench/cold_start.py``'s
  floor, its teardown included), twice: back to back (each start shares the CPU with the previous
  teardown), and ``--cold-gap-s`` apart on both sides (the idle host a sporadic request finds).

* **isolation** (part of a full run when runsc is installed): the python hello deployed twice in one daemon,
  ``isolation: gvisor`` next to ``isolation: runc`` as the baseline: warm invokes one at a time (interleaved
  halves) and cold starts (``ephemeral``). ``--isolation-only`` runs just this part (writes
  ``warm_invoke_isolation.json``).

Prints a table (faasd, baseline, ratio) and writes ``bench/results/warm_invoke.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
    BENCH_DIR,
    Row,
    deploy_hello,
    load_avg,
    print_table,
    require_root,
    start_daemon,
    summarize,
    write_result,
)

DEV_ROOTFS = Path(os.environ.get("FAASD_TEST_ROOTFS_DIR", "/var/lib/faasd-dev")) / "rootfs-python"


@dataclass
class Load:
    """Latencies (ms) of successful requests, error descriptions, wall time of the whole batch."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def extend(self, other: Load) -> None:
        self.latencies_ms += other.latencies_ms
        self.errors += other.errors
        self.wall_s += other.wall_s

    @property
    def rps(self) -> float:
        done = len(self.latencies_ms) + len(self.errors)
        return done / self.wall_s if self.wall_s else 0.0


async def run_load(url: str, n: int, concurrency: int, headers: dict[str, str] | None = None) -> Load:
    """``n`` POSTs to ``url`` with ``concurrency`` in flight; every non-200 answer counts as an error."""
    out = Load()
    remaining = n
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60.0) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                try:
                    resp = await client.post(url, content=b'{"name":"bench"}')
                except httpx.HTTPError as exc:
                    out.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                dt = (time.perf_counter() - t0) * 1000
                if resp.status_code == 200 and resp.content.strip(b'"') == b"hello":
                    out.latencies_ms.append(dt)
                else:
                    out.errors.append(f"HTTP {resp.status_code}: {resp.text[:200]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        out.wall_s = time.perf_counter() - t0
    return out


def start_uvicorn() -> tuple[subprocess.Popen[bytes], str]:
    from faasd.testing.server import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "hello_app:app", "--app-dir", str(BENCH_DIR), "--host",
         "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/hello"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"uvicorn baseline exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("uvicorn baseline did not start within 30 s")
        time.sleep(0.1)


async def compare(
    faasd_url: str, base_url: str, headers: dict[str, str], n: int, concurrency: int
) -> tuple[Load, Load]:
    """Run the same load on both, interleaved in two halves (faasd, base, base, faasd)."""
    f, b = Load(), Load()
    half = max(1, n // 2)
    f.extend(await run_load(faasd_url, half, concurrency, headers))
    b.extend(await run_load(base_url, half, concurrency))
    b.extend(await run_load(base_url, n - half, concurrency))
    f.extend(await run_load(faasd_url, n - half, concurrency, headers))
    return f, b


def cold_api(
    server: Any, name: str, n: int, gap_s: float = 0.0
) -> tuple[list[float], list[float], list[str]]:
    """Sequential invocations of an ephemeral function: client latency, daemon's X-Duration-Ms, errors.
    ``gap_s`` between requests (the daemon tears the sandbox down after its answer: with no gap the next
    start shares the CPU with that teardown)."""
    client_ms: list[float] = []
    server_ms: list[float] = []
    errors: list[str] = []
    headers = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120.0) as http:
        for _ in range(n):
            time.sleep(gap_s)
            t0 = time.perf_counter()
            resp = http.post(f"/api/v1/functions/{name}/invoke", content=b"{}")
            dt = (time.perf_counter() - t0) * 1000
            if resp.status_code != 200 or resp.headers.get("x-cold-start") != "true":
                cold = resp.headers.get("x-cold-start")
                errors.append(f"HTTP {resp.status_code} cold={cold}: {resp.text[:200]}")
                continue
            client_ms.append(dt)
            server_ms.append(float(resp.headers.get("x-duration-ms", "nan")))
    return client_ms, server_ms, errors


def isolation_rows(server: Any, seq_n: int, cold_n: int) -> tuple[list[Row], dict[str, Any]]:
    """gVisor vs runc for the same python hello in one daemon: warm (sequential, interleaved) and cold."""
    tag = uuid.uuid4().hex[:6]
    names = {iso: (f"bench-{iso}-warm-{tag}", f"bench-{iso}-cold-{tag}") for iso in ("runc", "gvisor")}
    with tempfile.TemporaryDirectory(prefix="fdb-iso-", dir="/var/tmp") as tmp:
        for iso, (warm_name, cold_name) in names.items():
            deploy_hello(server, warm_name, Path(tmp) / warm_name, mode="cached", isolation=iso,
                         min_replicas=1, max_replicas=1, queue_size=10000, idle_ttl_s=3600)
            deploy_hello(server, cold_name, Path(tmp) / cold_name, mode="ephemeral", isolation=iso,
                         min_replicas=0, max_replicas=1)
    headers = {"Authorization": f"Bearer {server.api_key}"}
    url = {iso: f"{server.url}/api/v1/functions/{pair[0]}/invoke" for iso, pair in names.items()}
    for iso in url:  # warm-up, not counted
        if (w := asyncio.run(run_load(url[iso], 20, 1, headers))).errors:
            raise SystemExit(f"{iso} warm-up failed: {w.errors[:3]}\n{server.log_tail()}")
    g, r = Load(), Load()
    half = max(1, seq_n // 2)
    for iso, n in (("gvisor", half), ("runc", half), ("runc", seq_n - half), ("gvisor", seq_n - half)):
        (g if iso == "gvisor" else r).extend(asyncio.run(run_load(url[iso], n, 1, headers)))
    cold: dict[str, tuple[list[float], list[float], list[str]]] = {iso: ([], [], []) for iso in names}
    for iso in cold:  # warm-up (page cache), not counted
        cold_api(server, names[iso][1], 1)
    for iso in ("gvisor", "runc", "runc", "gvisor"):  # interleaved halves
        c, srv, err = cold_api(server, names[iso][1], max(1, cold_n // 2))
        cold[iso][0].extend(c)
        cold[iso][1].extend(srv)
        cold[iso][2].extend(err)
    ws, wr = summarize(g.latencies_ms), summarize(r.latencies_ms)
    cs, cr = summarize(cold["gvisor"][0]), summarize(cold["runc"][0])
    rows = [
        Row("python hello warm p50, gvisor vs runc", ws.get("p50"), wr.get("p50"), "ms", "runc"),
        Row("python hello warm p99, gvisor vs runc", ws.get("p99"), wr.get("p99"), "ms", "runc"),
        Row("python hello cold (ephemeral) p50, gvisor vs runc", cs.get("p50"), cr.get("p50"), "ms", "runc"),
    ]
    data = {
        "warm_ms": {"gvisor": ws, "runc": wr},
        "cold_ms": {"gvisor": cs, "runc": cr},
        "restore": "not supported under gVisor: snapshots are CRIU images of runc containers "
                   "(400 isolation_unsupported; see bench/snapshots.py for runc restore)",
        "errors": {"warm_gvisor": g.errors[:5], "warm_runc": r.errors[:5],
                   "cold_gvisor": cold["gvisor"][2][:5], "cold_runc": cold["runc"][2][:5]},
        "error_count": len(g.errors) + len(r.errors) + len(cold["gvisor"][2]) + len(cold["runc"][2]),
    }
    return rows, data


def main_isolation_only(args: argparse.Namespace) -> None:
    load_start = load_avg()
    server = start_daemon()
    try:
        rows, data = isolation_rows(server, args.seq_n, args.cold_n)
    finally:
        leaked = server.stop()
    print_table(f"python hello, gVisor vs runc (load {load_start} -> {load_avg()}, shared 2 cores)", rows)
    print(f"restore under gVisor: {data['restore']}")
    if data["error_count"]:
        print(f"ERRORS: {data['errors']}")
    out = write_result(
        "warm_invoke_isolation",
        {"config": {"seq_n": args.seq_n, "cold_n": args.cold_n, "function": "python hello (handler.handle)"},
         "loadavg_start": load_start, "loadavg_end": load_avg(), "rows": rows, **data,
         "leaked_sandboxes": leaked},
        path=args.json,
    )
    print(f"wrote {out}")
    if data["error_count"] or leaked:
        raise SystemExit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1000, help="requests of the concurrent run (per side)")
    ap.add_argument("-c", type=int, default=8, help="requests in flight in the concurrent run")
    ap.add_argument("--seq-n", type=int, default=200, help="requests of the sequential run (per side)")
    ap.add_argument("--cold-n", type=int, default=10, help="cold starts (per side)")
    ap.add_argument("--cold-gap-s", type=float, default=0.3,
                    help="pause before each cold start of the 'apart' rows (an idle host, as a sporadic "
                    "request finds it)")
    ap.add_argument("--max-replicas", type=int, default=2, help="warm pool max of the faasd function")
    ap.add_argument("--json", type=Path, default=None, help="default: bench/results/warm_invoke.json")
    ap.add_argument("--isolation-only", action="store_true", help="only the gVisor vs runc python hello part")
    args = ap.parse_args()
    require_root()
    if args.isolation_only:
        main_isolation_only(args)
        return
    with_gvisor = shutil.which("runsc") is not None
    if not (DEV_ROOTFS / "usr/bin/python3").exists():
        raise SystemExit(f"{DEV_ROOTFS} is missing (run the test suite once to build it)")
    load_start = load_avg()
    work = Path(tempfile.mkdtemp(prefix="fdb-warm-", dir="/var/tmp"))
    uv_proc, base_url = start_uvicorn()
    server = None
    try:
        t0 = time.perf_counter()
        server = start_daemon()
        daemon_start_s = time.perf_counter() - t0
        warm_name = f"bench-warm-{uuid.uuid4().hex[:6]}"
        cold_name = f"bench-cold-{uuid.uuid4().hex[:6]}"
        deploy_hello(server, warm_name, work / "src-warm", mode="cached", min_replicas=1,
                     max_replicas=args.max_replicas, queue_size=10000, idle_ttl_s=3600)
        deploy_hello(server, cold_name, work / "src-cold", mode="ephemeral", min_replicas=0, max_replicas=1)
        headers = {"Authorization": f"Bearer {server.api_key}"}
        faasd_url = f"{server.url}/api/v1/functions/{warm_name}/invoke"
        # warm-up: pool workers up (both replicas), connections, imports; not counted
        warm = asyncio.run(run_load(faasd_url, 50, args.c, headers))
        asyncio.run(run_load(base_url, 50, args.c))
        if warm.errors:
            raise SystemExit(f"faasd warm-up failed: {warm.errors[:3]}\n{server.log_tail()}")
        f_seq, b_seq = asyncio.run(compare(faasd_url, base_url, headers, args.seq_n, 1))
        f_conc, b_conc = asyncio.run(compare(faasd_url, base_url, headers, args.n, args.c))
        # cold: API ephemeral vs raw runc run
        cold_api(server, cold_name, 1)  # warm-up (page cache), not counted
        cold_client, cold_server, cold_errors = cold_api(server, cold_name, args.cold_n)
        iso_client, iso_server, iso_errors = cold_api(server, cold_name, args.cold_n, args.cold_gap_s)
        iso_rows, iso_data = (
            isolation_rows(server, min(args.seq_n, 100), args.cold_n) if with_gvisor else ([], {})
        )
    finally:
        leaked = server.stop() if server is not None else []
        uv_proc.terminate()
        try:
            uv_proc.wait(10)
        except subprocess.TimeoutExpired:
            uv_proc.kill()
    try:
        from cold_start import bench_raw

        bench_raw(1, DEV_ROOTFS, work / "warmup")
        raw_ms = bench_raw(args.cold_n, DEV_ROOTFS, work / "raw")
        raw_gap_ms: list[float] = []
        for i in range(args.cold_n):  # spaced like the isolated faasd requests
            time.sleep(args.cold_gap_s)
            raw_gap_ms += bench_raw(1, DEV_ROOTFS, work / f"raw-gap-{i}")
    finally:
        subprocess.run(["umount", "-R", "-l", str(work)], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)

    s = {k: summarize(v.latencies_ms) for k, v in
         {"faasd_seq": f_seq, "base_seq": b_seq, "faasd_conc": f_conc, "base_conc": b_conc}.items()}
    cold_s, cold_srv, raw_s = summarize(cold_client), summarize(cold_server), summarize(raw_ms)
    iso_s, iso_srv, raw_gap_s = summarize(iso_client), summarize(iso_server), summarize(raw_gap_ms)
    uv = "uvicorn hello"
    rows = [
        Row("warm invoke p50, 1 in flight", s["faasd_seq"]["p50"], s["base_seq"]["p50"], "ms", uv),
        Row("warm invoke p99, 1 in flight", s["faasd_seq"]["p99"], s["base_seq"]["p99"], "ms", uv),
        Row(f"warm invoke p50, {args.c} in flight", s["faasd_conc"]["p50"], s["base_conc"]["p50"], "ms", uv),
        Row(f"warm invoke p99, {args.c} in flight", s["faasd_conc"]["p99"], s["base_conc"]["p99"], "ms", uv),
        Row(f"warm throughput, {args.c} in flight", round(f_conc.rps, 1), round(b_conc.rps, 1), "req/s", uv),
        Row("cold start via API (ephemeral) p50, back to back", cold_s.get("p50"), raw_s.get("p50"), "ms",
            "runc run"),
        Row(f"cold start via API (ephemeral) p50, {args.cold_gap_s:g} s apart", iso_s.get("p50"),
            raw_gap_s.get("p50"), "ms", "runc run"),
        *iso_rows,
    ]
    errors = {"faasd_seq": f_seq.errors, "base_seq": b_seq.errors, "faasd_conc": f_conc.errors,
              "base_conc": b_conc.errors, "cold": cold_errors, "cold_apart": iso_errors}
    print_table(f"warm/cold invoke (load {load_start} -> {load_avg()}, shared 2-core machine)", rows)
    for k, v in errors.items():
        if v:
            print(f"ERRORS {k}: {len(v)} e.g. {v[:2]}")
    if leaked:
        print(f"WARNING: the daemon left sandboxes behind: {leaked}")
    out = write_result(
        "warm_invoke",
        {
            "config": {"n": args.n, "concurrency": args.c, "seq_n": args.seq_n, "cold_n": args.cold_n,
                       "pool": {"mode": "cached", "min": 1, "max": args.max_replicas, "concurrency": 1},
                       "client": "httpx.AsyncClient, keep-alive, same process for both sides",
                       "raw_runc_rootfs": str(DEV_ROOTFS)},
            "loadavg_start": load_start,
            "loadavg_end": load_avg(),
            "daemon_start_s": round(daemon_start_s, 2),
            "rows": rows,
            "latency_ms": s,
            "throughput_rps": {"faasd": round(f_conc.rps, 1), "uvicorn": round(b_conc.rps, 1)},
            "cold_ms": {"api_client": cold_s, "api_x_duration_ms": cold_srv, "raw_runc_run": raw_s},
            "cold_apart_ms": {"gap_s": args.cold_gap_s, "api_client": iso_s, "api_x_duration_ms": iso_srv,
                              "raw_runc_run": raw_gap_s},
            "errors": {k: {"count": len(v), "examples": v[:5]} for k, v in errors.items()},
            "leaked_sandboxes": leaked,
            "isolation": iso_data,
        },
        path=args.json,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
