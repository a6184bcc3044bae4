"""The SDK (AsyncClient) and the CLI (`faas instance`, `faas job`) against a real HTTP daemon."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from instances_env import InstanceEnv
from typer.testing import CliRunner

from faasd.api.app import create_app
from faasd.cli.main import app as cli_app
from faasd.sdk import AsyncClient


@pytest.fixture
async def daemon_url(inst_env: InstanceEnv) -> AsyncIterator[str]:
    app = create_app(inst_env.settings, inst_env.platform, manage_platform=False)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.05)
    assert server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_sdk_instances_and_jobs(daemon_url: str, tmp_path: Path) -> None:
    async with AsyncClient(daemon_url, api_key="unused", key_file=tmp_path / "none") as c:
        inst = await c.start_instance(disk_gb=0.25, memory_mb=256, env={"A": "1"})
        assert inst.status == "running"
        res = await c.exec_instance(inst.id, ["sh", "-c", "cat; echo $A"], stdin=b"\x01raw\n")
        assert res.exit_code == 0 and res.stdout == "\x01raw\n1\n"
        up = await c.upload_to_instance(inst.id, "/d", {"f.txt": b"data"})
        assert up.files == 1
        data = await c.download_from_instance(inst.id, "/d/f.txt")
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            f = tar.extractfile("f.txt")
            assert f is not None and f.read() == b"data"
        job = await c.run_job("pause_instance", {"instance_id": inst.id})
        assert job.status == "succeeded" and job.result["status"] == "paused"
        assert (await c.get_job(job.job_id)).type == 8
        assert (await c.instance_action(inst.id, "resume")).status == "running"
        assert [i.id for i in await c.list_instances()] == [inst.id]
        await c.delete_instance(inst.id)


async def test_cli_instance_commands(daemon_url: str, tmp_path: Path) -> None:
    runner = CliRunner()

    async def faas(*args: str, code: int = 0) -> str:
        result = await asyncio.to_thread(runner.invoke, cli_app, ["--url", daemon_url, *args])
        assert result.exit_code == code, (args, result.output)
        return result.stdout

    inst = json.loads(await faas("instance", "start", "--disk", "0.25", "--memory", "256", "--json"))
    iid = inst["id"]
    assert "running" in await faas("instance", "ls")
    src = tmp_path / "site"
    src.mkdir()
    (src / "index.html").write_text("from-cli\n")
    await faas("instance", "cp", str(src), f"{iid}:/srv")
    assert await faas("instance", "exec", iid, "--", "cat", "/srv/site/index.html") == "from-cli\n"
    await faas("instance", "exec", iid, "--", "sh", "-c", "exit 7", code=7)
    await faas(
        "instance",
        "exec",
        iid,
        "--",
        "sh",
        "-c",
        "cd /srv/site && (python3 -m http.server 8200 --bind 127.0.0.1 </dev/null >/dev/null 2>&1 &)",
    )
    url = (await faas("instance", "expose", iid, "8200")).strip()
    async with httpx.AsyncClient() as h:
        body = None
        for _ in range(100):
            try:
                r = await h.get(url + "/index.html")
                if r.status_code == 200:
                    body = r.text
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    assert body == "from-cli\n"
    await faas("instance", "pause", iid)
    await faas("instance", "resume", iid)
    await faas("instance", "stop", iid)
    await faas("instance", "start", iid)
    out_dir = tmp_path / "back"
    await faas("instance", "cp", f"{iid}:/srv/site", str(out_dir))
    assert (out_dir / "site" / "index.html").read_text() == "from-cli\n"
    job = json.loads(await faas("job", "run", "stop_instance", "--args", json.dumps({"instance_id": iid})))
    assert job["result"]["status"] == "stopped"
    assert json.loads(await faas("job", "get", job["job_id"]))["type"] == 7
    await faas("job", "run", "6", "--args", '{"cpu_cores": "x"}', code=1)
    await faas("instance", "rm", iid)
    await faas("instance", "get", iid, code=1)
