"""Snapshots end to end: the real ``faas`` CLI (subprocess) and the SDK against a real daemon."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from snapshot_api_helpers import HANDLER

from faasd.sdk import Client
from faasd.sdk.errors import Conflict
from faasd.testing.helpers import deploy_function
from faasd.testing.leaks import runc_ids
from faasd.testing.server import FaasdServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

FAAS = Path(sys.executable).parent / "faas"


def _faas(server: FaasdServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FAAS), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**server.env(), "COLUMNS": "200"},
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    return result.stdout


def test_cli_and_sdk_snapshot_journey(
    faasd_server: FaasdServer, faasd_platform: Client, tmp_path: Path
) -> None:
    client = faasd_platform
    name = "snap-" + uuid.uuid4().hex[:10]
    src = tmp_path / "fn"
    src.mkdir()
    (src / "handler.py").write_text(HANDLER)
    deploy_function(client, name, source=src, server=faasd_server)
    created: list[str] = []
    snaps: list[str] = []
    try:
        assert client.invoke(name, b"").json()["n"] == 1
        snap_id = _ok(_faas(faasd_server, "snapshot", "create", "--function", name, "-l", "k=v")).split()[-1]
        snaps.append(snap_id)
        assert snap_id.startswith("snap-")
        listing = _ok(_faas(faasd_server, "snapshot", "ls", "--function", name))
        assert snap_id in listing and "process" in listing
        inspect = json.loads(_ok(_faas(faasd_server, "snapshot", "inspect", snap_id, "--json")))
        assert inspect["labels"] == {"k": "v"} and inspect["function"] == name

        sb = _ok(_faas(faasd_server, "snapshot", "restore", snap_id)).split()[-1]
        created.append(sb)
        body = json.loads(_ok(_faas(faasd_server, "sandbox", "invoke", sb)))
        assert body["n"] == 2

        # branch via the CLI, write diverging files, merge with fail (exit 1 + report) then union
        copies = json.loads(_ok(_faas(faasd_server, "branch", snap_id, "-n", "2", "--seed", "9", "--json")))
        ids = [c["id"] for c in copies]
        created += ids
        assert [(c["seed"], c["copy_index"]) for c in copies] == [(9, 0), (9, 1)]
        seeded = json.loads(_ok(_faas(faasd_server, "snapshot", "restore", snap_id, "--seed", "9", "--json")))
        created.append(seeded["id"])
        first = json.loads(_ok(_faas(faasd_server, "sandbox", "invoke", ids[0])))
        assert json.loads(_ok(_faas(faasd_server, "sandbox", "invoke", seeded["id"])))["r"] == first["r"]
        _ok(_faas(faasd_server, "sandbox", "invoke", ids[0], "-d", "write:one.txt:1"))
        _ok(_faas(faasd_server, "sandbox", "invoke", ids[0], "-d", "write:both.txt:first"))
        _ok(_faas(faasd_server, "sandbox", "invoke", ids[1], "-d", "write:two.txt:2"))
        _ok(_faas(faasd_server, "sandbox", "invoke", ids[1], "-d", "write:both.txt:second"))
        branch_snaps = [client.snapshot(sandbox_id=i).id for i in ids]
        snaps += branch_snaps
        failed = _faas(faasd_server, "merge", *branch_snaps, "--strategy", "fail")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "/var/tmp/both.txt" in failed.stdout and "conflict" in failed.stdout
        assert "conflict" in failed.stderr
        merged = _faas(faasd_server, "merge", *branch_snaps, "--strategy", "union")
        out = _ok(merged)
        assert "/var/tmp/both.txt" in out
        snaps.append(out.split()[-1])

        # the SDK: the same conflict as a typed error carrying the report
        with pytest.raises(Conflict) as exc:
            client.merge(branch_snaps, strategy="fail")
        assert [c["path"] for c in exc.value.details["report"]["conflicts"]] == ["var/tmp/both.txt"]
        result = client.merge(branch_snaps, strategy="ours")
        snaps.append(result.snapshot.id)
        assert result.report.conflicts[0].resolution == branch_snaps[0]
        assert {s.id for s in client.list_sandboxes()} >= set(created)
        assert client.invoke_sandbox(ids[1], b"").json()["n"] == 4
        # the CLI merges mixed kinds in the order given: a live sandbox (snapshotted now) and a snapshot
        cmd = ["merge", ids[1], branch_snaps[0], "--strategy", "ours", "--json"]
        mixed = json.loads(_ok(_faas(faasd_server, *cmd)))
        snaps += [*mixed["branches"][:1], mixed["snapshot"]["id"]]
        assert mixed["base"] == snap_id and mixed["branches"][1] == branch_snaps[0]
        assert mixed["report"]["conflicts"][0]["resolution"] == mixed["branches"][0]

        _ok(_faas(faasd_server, "sandbox", "rm", *created))
        assert not set(created) & {s.id for s in client.list_sandboxes()}
    finally:
        for sid in created:
            with contextlib.suppress(Exception):  # already removed
                client.delete_sandbox(sid)
        for sid in reversed(snaps):
            with contextlib.suppress(Exception):  # best-effort cleanup
                client.delete_snapshot(sid, force=True)
        client.delete_function(name)
    assert faasd_server.run_dir is not None
    assert not set(created) & set(runc_ids(faasd_server.run_dir / "runc"))
