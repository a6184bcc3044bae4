"""The seed SDK's conveniences in faasd's SDK (sync and async) and CLI, against a real daemon."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from faasd.sdk import AsyncClient, Client
from faasd.testing.leaks import leak_checked_server
from faasd.testing.server import FaasdServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

FAAS = Path(sys.executable).parent / "faas"


@pytest.fixture(scope="module")
def server() -> Iterator[FaasdServer]:
    with leak_checked_server(env={"FAASD_BASE_IMAGES": "python,node"}) as srv:
        yield srv


def faas(server: FaasdServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FAAS), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**server.env(), "COLUMNS": "200"},
    )


def test_sdk_conveniences(server: FaasdServer) -> None:
    with server.client(timeout=300.0) as c:
        c: Client  # type: ignore[no-redef]
        assert c.health_check()["status"] in ("healthy", "degraded")
        r = c.run_python("import sys; print(sys.version_info[0])")
        assert r.output == "3\n" and r.error is None and r.mode == "ephemeral"
        assert c.run_javascript("console.log(6 * 7)").stdout == "42\n"
        r = c.run_bash("echo $X; exit 4", env_vars={"X": "y"})
        assert r.stdout == "y\n" and r.exit_code == 4 and r.error == "Process exited with code 4"
        pool = c.prewarm("faasd/python:latest", 1)
        assert pool["warm"] == 1
        assert c.run_python("print(1)").start == "warm"
        ck = c.execute("echo base > /f", mode="checkpointed")
        assert ck.snapshot is not None and ck.snapshot["id"].startswith("snap-")
        assert c.fork_execution(ck.request_id, "cat /f").stdout == "base\n"
        both = c.fork(ck.request_id, ["echo x >> /f; cat /f", "cat /f"])
        assert [b.stdout for b in both] == ["base\nx\n", "base\n"]
        m = c.get_metrics()
        assert m["total_requests"] >= 6 and m["docker_executions"] >= 6
        assert c.get_metrics(detailed=True)["performance"]["warm_starts"] >= 1
        assert c.pools()["execute"][0]["taken"] >= 1
        c.prewarm("faasd/python:latest", 0)

    async def run_async() -> None:
        async with AsyncClient(server.url, api_key=server.api_key, timeout=300.0) as ac:
            r = await ac.run_python("print('async')")
            assert r.output == "async\n"
            assert (await ac.get_metrics())["total_requests"] >= 1

    asyncio.run(run_async())


def test_cli_modes_fork_prewarm(server: FaasdServer) -> None:
    r = faas(server, "exec", "--mode", "checkpointed", "--json", "--", "/bin/sh", "-c", "echo v1 > /s")
    assert r.returncode == 0, r.stderr
    ck = json.loads(r.stdout)
    assert ck["snapshot"]["id"].startswith("snap-")
    r = faas(server, "exec", "--mode", "branched", "--branch-from", ck["request_id"], "--", "cat", "/s")
    assert r.returncode == 0 and r.stdout == "v1\n", r.stderr
    r = faas(server, "fork", ck["snapshot"]["id"], "-C", "echo a >> /s; cat /s", "-C", "cat /s", "--json")
    assert r.returncode == 0, r.stderr
    assert [x["stdout"] for x in json.loads(r.stdout)] == ["v1\na\n", "v1\n"]
    r = faas(server, "exec", "--runtime", "firecracker", "--", "true")
    assert r.returncode != 0 and "firecracker" in r.stderr
    r = faas(server, "prewarm", "faasd/python:latest", "-n", "1", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["warm"] == 1, r.stderr
    r = faas(server, "pools", "--json")
    assert json.loads(r.stdout)["execute"][0]["warm"] == 1
    assert faas(server, "prewarm", "faasd/python:latest", "-n", "0").returncode == 0
