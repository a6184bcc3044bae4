"""Run every benchmark with modest defaults and print one combined table (faasd, baseline, ratio).

Usage (root): ``.venv/bin/python bench/run_all.py [--only cold_start,warm_invoke,snapshots,image_import,...]``

Each benchmark runs as its own subprocess (its own output is shown as it goes) and writes its JSON
under ``bench/results/``; this script then collects the headline rows into ``bench/results/latest.json``
and ``bench/results/latest.md`` (the table the README shows, with the command and machine load).
Budget: well under 10 minutes on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    BENCH_DIR,
    RESULTS_DIR,
    Row,
    load_avg,
    machine_info,
    markdown_table,
    print_table,
    require_root,
    rows_from_json,
    write_result,
)


def _cold_rows(doc: dict[str, Any]) -> list[Row]:
    ms = doc["ms"]
    return [
        Row("cold start python print, SandboxManager.run p50", ms["faasd SandboxManager.run"]["p50"],
            ms["raw runc run"]["p50"], "ms", "runc run"),
        Row("cold start python print, SandboxManager.run p50, background teardown (execute API)",
            ms["faasd run, background teardown"]["p50"], ms["raw runc run"]["p50"], "ms", "runc run"),
    ]


def _snapshot_rows(doc: dict[str, Any]) -> list[Row]:
    rows = []
    for program, sc in doc["scenarios"].items():
        cold = sc["cold_start_to_first_output"]["median_ms"]
        n = sc["branch_n"]
        hot = sc["restore_hot_to_first_output"]["median_ms"]
        rows += [
            Row(f"snapshot restore to first output, hot ({program}) p50", hot, cold, "ms", "cold start"),
            Row(f"snapshot restore to first output, from store ({program}) p50",
                sc["restore_from_store_to_first_output"]["median_ms"], cold, "ms", "cold start"),
            Row(f"branch-{n}, all copies answering ({program}) p50",
                sc[f"branch_{n}_to_all_output"]["median_ms"], hot, "ms", "one hot restore"),
            Row(f"snapshot, leave running ({program}) p50", sc["snapshot_total"]["median_ms"], cold, "ms",
                "cold start"),
            Row(f"snapshot: source frozen ({program}) p50", sc["source_frozen"]["median_ms"], cold, "ms",
                "cold start"),
        ]
        mem = sc["memory_kib"]
        key = f"branch_{n}_pss_after_ksm"
        if key not in mem:
            key = f"branch_{n}_pss_at_answer"
        rows.append(Row(f"branch-{n} memory, PSS ({program}, {key.split('pss_')[1].replace('_', ' ')})",
                        round(mem[key] / 1024, 1), round(mem["one_copy_pss"] / 1024, 1), "MB", "one copy"))
    return rows


def _faas_rows(doc: dict[str, Any]) -> list[Row]:
    """The ``faas`` commands' rows (the bare httpx GET is a baseline, shown beside them)."""
    return [r for r in rows_from_json(doc) if r.metric.startswith("faas ")]


BENCHMARKS: dict[str, tuple[list[str], str, Callable[[dict[str, Any]], list[Row]]]] = {
    # name: (argv after the script, json file, how to get the headline rows)
    "cold_start": (["-n", "10", "--json", "{json}"], "cold_start.json", _cold_rows),
    "warm_invoke": (["-n", "600", "-c", "8", "--seq-n", "200", "--cold-n", "10", "--json", "{json}"],
                    "warm_invoke.json", rows_from_json),
    "snapshots": (["--rounds", "3", "--programs", "light,heavy", "--branch", "10", "--out", "{json}"],
                  "snapshots.json", _snapshot_rows),
    "image_import": (["--rounds", "2", "--run-n", "5", "--json", "{json}"], "image_import.json",
                     rows_from_json),
    "load": (["--levels", "1,8,64", "--seconds-per-level", "1", "--json", "{json}"], "load.json",
             rows_from_json),
    "gateway_records": (["-n", "10000", "--rounds", "2", "--json", "{json}"], "gateway_records.json",
                        rows_from_json),
    "seed_perf": (["--cold-n", "10", "--restore-n", "5", "--concurrent", "1000", "--json", "{json}"],
                  "seed_perf.json", rows_from_json),
    "cli_footprint": (["-n", "10", "--json", "{json}"], "cli_footprint.json", _faas_rows),
}


def seed_table(doc: dict[str, Any]) -> list[str]:
    """The seed's three performance tests by name: measured figure, threshold, pass/fail (markdown)."""
    out = ["| seed performance test | measured (this run) | threshold | result |", "|---|---:|---|---|"]
    for t in doc["seed_tests"]:
        verdict = "**pass**" if t["pass"] else "**fail**"
        out.append(f"| {t['name']} | {t['measured']} {t['unit']} | {t['threshold']} | {verdict} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds per benchmark")
    args = ap.parse_args()
    require_root()
    command = ".venv/bin/python bench/run_all.py" + (
        f" --only {args.only}" if args.only != ",".join(BENCHMARKS) else ""
    )
    started = time.time()
    load_start = load_avg()
    rows: list[Row] = []
    runs: dict[str, Any] = {}
    for name in args.only.split(","):
        argv_tail, json_name, to_rows = BENCHMARKS[name]
        json_path = RESULTS_DIR / json_name
        argv = [sys.executable, str(BENCH_DIR / f"{name}.py"),
                *(a.replace("{json}", str(json_path)) for a in argv_tail)]
        print(f"\n=== {name}: {shlex.join(argv[1:])}  (load {load_avg()})", flush=True)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(argv, timeout=args.timeout, check=False)
            rc: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        elapsed = round(time.perf_counter() - t0, 1)
        runs[name] = {"argv": argv[1:], "exit": rc, "seconds": elapsed, "json": str(json_path),
                      "loadavg_after": load_avg()}
        if rc != 0:
            print(f"!!! {name} failed ({rc}); its rows are missing from the table", flush=True)
            continue
        doc = json.loads(json_path.read_text())
        for r in to_rows(doc):
            r.metric = f"{name}: {r.metric}"
            rows.append(r)
    total_s = round(time.time() - started, 1)
    load_end = load_avg()
    title = f"faasd vs baselines (load {load_start} -> {load_end}, shared 2-core machine, {total_s} s)"
    print()
    print_table(title, rows)
    info = machine_info()
    write_result("latest", {"command": command, "total_seconds": total_s, "loadavg_start": load_start,
                            "loadavg_end": load_end, "runs": runs, "rows": rows})
    failed = [k for k, v in runs.items() if v["exit"] != 0]
    md = [
        "# faasd benchmarks (latest run)",
        "",
        f"Command: `{command}` (from the repository root, as root), {info['date']}, {total_s} s.",
        "",
        f"Machine: {info['nproc']} cores, kernel {info['kernel']}, {info['runc']}, CRIU {info['criu']}, "
        f"{info['podman']}. Load average (1/5/15 min) {load_start} at the start, {load_end} at the end: "
        "with other work on the machine absolute numbers drift, the same-run ratios much less. "
        "Each faasd number is measured next to its baseline in the same run; the ratio is faasd / "
        "baseline (for throughput, lower than 1 means faasd serves fewer requests per second).",
        "",
        markdown_table(rows),
        "Baselines: `runc run` = a bare bundle on the same python rootfs (no overlay, netns, seccomp, "
        "limits); `uvicorn hello` = a bare Starlette endpoint on uvicorn, same client and load pattern; "
        "`cold start` = "
        "starting the same program from scratch in a faasd sandbox; `podman load`/`podman run --rm` = "
        "podman 4 with a private overlay store and runc. Details and all percentiles: "
        "`bench/results/<benchmark>.json`.",
    ]
    seed_json = RESULTS_DIR / "seed_perf.json"
    if "seed_perf" in runs and seed_json.exists() and seed_json.stat().st_mtime >= started:
        md += ["", "Seed performance tests (`bench/seed_perf.py`, same run; how each is measured: its "
               "docstring):", "", *seed_table(json.loads(seed_json.read_text()))]
    if failed:
        md += ["", f"**Failed in this run**: {', '.join(failed)} (see `bench/results/latest.json`)."]
    (RESULTS_DIR / "latest.md").write_text("\n".join(md) + "\n")
    print(f"wrote {RESULTS_DIR / 'latest.json'} and {RESULTS_DIR / 'latest.md'}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
