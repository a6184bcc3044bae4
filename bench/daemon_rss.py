"""Memory of the idle daemon after a warm-up of many invocations (issue 11: <= 100 MB RSS).

Usage (root): ``.venv/bin/python bench/daemon_rss.py [-n 10000] [-c 8] [--before-src DIR] [--json PATH]``

A private ``faasd`` daemon (python base image from the host cache) gets a python hello function
(``cached``, at most 2 workers, ``idle_ttl_s`` 15 s); ``hey`` sends ``n`` invocations (``POST
/api/v1/functions/<name>/invoke``, ``c`` in flight); then the run waits until the pool has scaled to
zero and a few seconds more ("back to idle"). RSS (``VmRSS`` of ``/proc/<pid>/status``) is summed over
the daemon and its descendants that are daemon processes (same cgroup as the daemon: runc helpers and
the sandboxes' processes live in ``faasd/fd-*`` cgroups and are not counted), sampled: fresh (started,
nothing deployed: the same-run baseline), warm (deployed, one invocation), right after the load, and
back at idle. ``--before-src DIR`` (a ``src/`` of another faasd, e.g. ``git archive <commit> src``) runs the
same sequence on a daemon of that tree first, in the same run. Any non-200 answer fails the benchmark.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, deploy_hello, load_avg, print_table, require_root, start_daemon, write_result

TARGET_MB = 100.0


def _status(pid: int) -> dict[str, int]:
    """The ``kB`` fields of /proc/<pid>/status (VmRSS, RssAnon, RssFile, ...)."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0])
    return out


def _cgroup(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


def daemon_processes(root: int) -> list[int]:
    """``root`` and its descendants in the same cgroups (daemon processes, not sandboxes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    mine = _cgroup(root)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            if pid == root or _cgroup(pid) == mine:
                out.append(pid)
        except OSError:
            continue
        todo.extend(children.get(pid, []))
    return out


def sample(root: int) -> dict[str, Any]:
    pids = daemon_processes(root)
    per = {}
    for pid in pids:
        try:
            per[pid] = _status(pid)
        except OSError:
            continue
    total = sum(s.get("VmRSS", 0) for s in per.values())
    return {
        "rss_mb": round(total / 1024, 1),
        "daemon_rss_mb": round(per.get(root, {}).get("VmRSS", 0) / 1024, 1),
        "daemon_anon_mb": round(per.get(root, {}).get("RssAnon", 0) / 1024, 1),
        "daemon_file_mb": round(per.get(root, {}).get("RssFile", 0) / 1024, 1),
        "daemon_hwm_mb": round(per.get(root, {}).get("VmHWM", 0) / 1024, 1),
        "processes": len(per),
        "threads": int(Path(f"/proc/{root}/status").read_text().split("Threads:")[1].split()[0]),
    }


def run_hey(url: str, key: str | None, n: int, c: int) -> dict[str, Any]:
    hey = shutil.which("hey")
    if hey is None:
        raise SystemExit("this benchmark needs `hey` (Debian package hey)")
    argv = [hey, "-n", str(n), "-c", str(c), "-m", "POST", "-d", "{}", "-T", "application/json", "-t", "60"]
    if key:
        argv += ["-H", f"Authorization: Bearer {key}"]
    t0 = time.monotonic()
    res = subprocess.run([*argv, url], capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - t0
    codes = {int(a): int(b) for a, b in re.findall(r"\[(\d+)\]\s+(\d+) responses", res.stdout)}
    _, marker, errors = res.stdout.partition("Error distribution:")
    errors = errors.strip() if marker else ""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", res.stdout)
    return {"codes": codes, "errors": errors[:2000], "seconds": round(elapsed, 1),
            "rps": float(rps.group(1)) if rps else None, "returncode": res.returncode}


def wait_scaled_to_zero(server: Any, name: str, timeout: float) -> float:
    t0 = time.monotonic()
    with server.client(timeout=30.0) as client:
        while time.monotonic() - t0 < timeout:
            fn = client.get_function(name)
            if fn.status is not None and fn.status.replicas == 0 and fn.status.busy == 0:
                return time.monotonic() - t0
            time.sleep(1.0)
    raise SystemExit(f"the pool of {name} did not scale to zero within {timeout:.0f} s")


def run_one(n: int, c: int, settle: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Fresh / warm / after-load / idle samples of one daemon (``env``: its extra environment)."""
    name = f"bench-rss-{uuid.uuid4().hex[:6]}"
    server = start_daemon(env=env)
    try:
        assert server.process is not None
        pid = server.process.pid
        time.sleep(settle)
        samples = {"fresh": sample(pid)}
        with tempfile.TemporaryDirectory(prefix="fdb-rss-", dir="/var/tmp") as tmp:
            deploy_hello(server, name, Path(tmp) / name, mode="cached", min_replicas=0, max_replicas=2,
                         queue_size=10000, idle_ttl_s=15)
        url = f"{server.url}/api/v1/functions/{name}/invoke"
        warm = run_hey(url, server.api_key, 1, 1)
        if warm["codes"] != {200: 1}:
            raise SystemExit(f"warm-up invocation failed: {warm}\n{server.log_tail()}")
        samples["warm"] = sample(pid)
        load = run_hey(url, server.api_key, n, c)
        samples["after_load"] = sample(pid)
        failed = n - load["codes"].get(200, 0)
        if failed or load["errors"]:
            raise SystemExit(f"{failed} of {n} invocations failed: {load}\n{server.log_tail()}")
        idle_s = wait_scaled_to_zero(server, name, 300.0)
        time.sleep(settle)
        samples["idle_after_load"] = sample(pid)
        with server.client(timeout=30.0) as client:
            count = client.get_function(name).invocation_count
    finally:
        server.stop()
    if count != n + 1:
        raise SystemExit(f"the function counted {count} invocations, sent {n + 1}")
    return {"samples": samples, "load": load, "scale_to_zero_s": round(idle_s, 1), "invocation_count": count}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("-c", type=int, default=8)
    ap.add_argument("--settle", type=float, default=5.0, help="seconds at idle before the last sample")
    ap.add_argument("--before-src", type=Path, default=None, help="a src/ dir of faasd to compare with")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    require_root()
    load_start, t0 = load_avg(), time.monotonic()
    before = None
    if args.before_src:
        before = run_one(args.n, args.c, args.settle, env={"PYTHONPATH": str(args.before_src)})
    this = run_one(args.n, args.c, args.settle)
    samples, load, count = this["samples"], this["load"], this["invocation_count"]
    fresh, idle = samples["fresh"]["rss_mb"], samples["idle_after_load"]["rss_mb"]
    base = "fresh daemon"
    rows = [
        Row(f"daemon RSS at idle after {args.n} invocations", idle, fresh, "MB", base),
        Row("daemon RSS right after the load", samples["after_load"]["rss_mb"], fresh, "MB", base),
        Row("daemon RSS, warm (deployed, 1 invocation)", samples["warm"]["rss_mb"], fresh, "MB", base),
    ]
    if before is not None:
        old = before["samples"]["idle_after_load"]["rss_mb"]
        rows.append(Row(f"daemon RSS at idle after {args.n} invocations, vs --before-src", idle, old, "MB",
                        "before"))
        old_fresh = before["samples"]["fresh"]["rss_mb"]
        rows.append(Row("fresh daemon RSS, vs --before-src", fresh, old_fresh, "MB", "before"))
    print_table(f"daemon memory (load {load_start} -> {load_avg()})", rows)
    met = idle <= TARGET_MB
    verdict = "met" if met else "NOT met"
    print(f"idle after {args.n} invocations: {idle} MB (target <= {TARGET_MB:.0f} MB: {verdict})")
    out = write_result(
        "daemon_rss",
        {"n": args.n, "c": args.c, "duration_s": round(time.monotonic() - t0, 1), "loadavg_start": load_start,
         "loadavg_end": load_avg(), "samples": samples, "load": load,
         "scale_to_zero_s": this["scale_to_zero_s"], "invocation_count": count,
         "before_src": str(args.before_src) if args.before_src else None, "before": before,
         "target": {"idle_rss_mb": idle, "target_mb": TARGET_MB, "met": met},
         "rows": rows},
        path=args.json,
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
