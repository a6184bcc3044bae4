"""Persistent instances through the real API: exec, files, pause/resume, stop/start, ports, TTL."""

from __future__ import annotations

import asyncio
import base64
import io
import tarfile
from pathlib import Path

import httpx
from instances_env import InstanceEnv


async def _start(ie: InstanceEnv, **body: object) -> dict[str, object]:
    r = await ie.client.post("/api/v1/instances", json={"image": "faasd/python:latest", **body})
    assert r.status_code == 201, r.text
    return r.json()


async def _exec(ie: InstanceEnv, iid: str, command: object, **kw: object) -> dict[str, object]:
    r = await ie.client.post(f"/api/v1/instances/{iid}/exec", json={"command": command, **kw})
    assert r.status_code == 200, r.text
    return r.json()


async def test_exec_stdin_env_and_files(inst_env: InstanceEnv) -> None:
    inst = await _start(inst_env, env={"GREETING": "hi"}, disk_gb=0.25)
    iid = str(inst["id"])
    assert inst["status"] == "running"
    out = await _exec(
        inst_env, iid, ["sh", "-c", 'read x; echo "$x-$GREETING-$EXTRA"'], stdin="in\n", env={"EXTRA": "e"}
    )
    assert out["exit_code"] == 0 and out["stdout"] == "in-hi-e\n"
    bad = await _exec(inst_env, iid, "echo oops >&2; exit 3")
    assert bad["exit_code"] == 3 and bad["stderr"] == "oops\n"

    # JSON upload, then read back with exec and with the tar download
    payload = b"\x00binary\xffdata"
    r = await inst_env.client.put(
        f"/api/v1/instances/{iid}/files",
        json={
            "target_path": "/work",
            "files": [
                {"path": "a/b.bin", "content": base64.b64encode(payload).decode()},
                {"path": "hello.txt", "content": base64.b64encode(b"hello\n").decode()},
            ],
        },
    )
    assert r.status_code == 200, r.text
    assert (await _exec(inst_env, iid, ["cat", "/work/hello.txt"]))["stdout"] == "hello\n"
    r = await inst_env.client.get(f"/api/v1/instances/{iid}/files", params={"path": "/work/a"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        f = tar.extractfile("a/b.bin")
        assert f is not None and f.read() == payload

    # tar upload
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("dir/x.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"xyz"))
    r = await inst_env.client.put(
        f"/api/v1/instances/{iid}/files",
        params={"path": "/srv"},
        content=buf.getvalue(),
        headers={"content-type": "application/x-tar"},
    )
    assert r.status_code == 200, r.text
    assert (await _exec(inst_env, iid, ["cat", "/srv/dir/x.txt"]))["stdout"] == "xyz"
    r = await inst_env.client.get(f"/api/v1/instances/{iid}/files", params={"path": "/nope"})
    assert r.status_code == 404

    listed = (await inst_env.client.get("/api/v1/instances")).json()["instances"]
    assert [i["id"] for i in listed] == [iid]
    assert (await inst_env.client.delete(f"/api/v1/instances/{iid}")).status_code == 204
    assert (await inst_env.client.get(f"/api/v1/instances/{iid}")).status_code == 404


async def test_pause_really_freezes(inst_env: InstanceEnv) -> None:
    inst = await _start(inst_env, disk_gb=0.25)
    iid = str(inst["id"])
    await _exec(
        inst_env,
        iid,
        "(i=0; while :; do i=$((i+1)); echo $i > /counter; sleep 0.05; done) </dev/null >/dev/null 2>&1 &",
    )
    sb = inst_env.platform.instances.sandbox_of(iid)  # type: ignore[union-attr]
    counter = Path(sb.rootfs.path) / "counter"  # type: ignore[union-attr]

    async def value() -> int:
        for _ in range(100):
            txt = counter.read_text().strip() if counter.exists() else ""
            if txt:
                return int(txt)
            await asyncio.sleep(0.05)
        raise AssertionError("counter never written")

    first = await value()
    for _ in range(100):
        if await value() > first:
            break
        await asyncio.sleep(0.05)
    assert await value() > first
    r = await inst_env.client.post(f"/api/v1/instances/{iid}/pause")
    assert r.status_code == 200 and r.json()["status"] == "paused"
    assert sb.cgroup_read("freezer", "freezer.state").strip() == "FROZEN"  # type: ignore[union-attr]
    frozen = await value()
    await asyncio.sleep(1.0)
    assert await value() == frozen
    # exec on a (manually) paused instance is refused, not silently resumed
    r = await inst_env.client.post(f"/api/v1/instances/{iid}/exec", json={"command": "true"})
    assert r.status_code == 409
    r = await inst_env.client.post(f"/api/v1/instances/{iid}/resume")
    assert r.status_code == 200 and r.json()["status"] == "running"
    for _ in range(200):
        if await value() > frozen:
            break
        await asyncio.sleep(0.05)
    assert await value() > frozen


async def test_stop_start_keeps_files(inst_env: InstanceEnv) -> None:
    inst = await _start(inst_env, disk_gb=0.25)
    iid = str(inst["id"])
    await _exec(inst_env, iid, "mkdir -p /data && echo one > /data/f && rm /etc/issue")
    r = await inst_env.client.post(f"/api/v1/instances/{iid}/stop")
    assert r.status_code == 200 and r.json()["status"] == "stopped" and r.json()["fs_snapshot"]
    r = await inst_env.client.post(f"/api/v1/instances/{iid}/exec", json={"command": "true"})
    assert r.status_code == 409
    r = await inst_env.client.post(f"/api/v1/instances/{iid}/start")
    assert r.status_code == 200 and r.json()["status"] == "running"
    out = await _exec(inst_env, iid, "cat /data/f; test -e /etc/issue && echo present || echo gone")
    assert out["stdout"] == "one\ngone\n"
    # a second generation on top of the first
    await _exec(inst_env, iid, "echo two >> /data/f")
    await inst_env.client.post(f"/api/v1/instances/{iid}/stop")
    await inst_env.client.post(f"/api/v1/instances/{iid}/start")
    assert (await _exec(inst_env, iid, "cat /data/f"))["stdout"] == "one\ntwo\n"
    assert (await inst_env.client.delete(f"/api/v1/instances/{iid}")).status_code == 204


async def test_expose_port_serves_http(inst_env: InstanceEnv) -> None:
    inst = await _start(inst_env, disk_gb=0.25)
    iid = str(inst["id"])
    await _exec(
        inst_env,
        iid,
        "mkdir -p /site && echo served-from-instance > /site/index.html && "
        "(cd /site && python3 -m http.server 8000 --bind 127.0.0.1 </dev/null >/dev/null 2>&1 &)",
    )
    r = await inst_env.client.post(
        f"/api/v1/instances/{iid}/ports", json={"internal_port": 8000, "protocol": "http", "subdomain": "web"}
    )
    assert r.status_code == 200, r.text
    port = r.json()
    assert port["subdomain"] == "web" and port["url"].startswith("http://127.0.0.1:")
    async with httpx.AsyncClient() as direct:
        body = None
        for _ in range(100):  # the server inside may still be starting
            try:
                resp = await direct.get(port["url"] + "/index.html")
                if resp.status_code == 200:
                    body = resp.text
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    assert body == "served-from-instance\n"
    r = await inst_env.client.get(f"/api/v1/instances/{iid}/ports/8000/index.html")
    assert r.status_code == 200 and r.text == "served-from-instance\n"
    r = await inst_env.client.get(f"/api/v1/instances/{iid}/ports/9999/x")
    assert r.status_code == 404
    got = (await inst_env.client.get(f"/api/v1/instances/{iid}")).json()
    assert got["ports"][0]["host_port"] == port["host_port"]


async def test_ttl_auto_pause_and_resume_on_demand(inst_env: InstanceEnv) -> None:
    inst = await _start(inst_env, disk_gb=0.25, ttl_s=0.5)
    iid = str(inst["id"])
    status = None
    for _ in range(100):
        status = (await inst_env.client.get(f"/api/v1/instances/{iid}")).json()
        if status["status"] == "paused":
            break
        await asyncio.sleep(0.1)
    assert status is not None and status["status"] == "paused" and status["auto_paused"] is True
    sb = inst_env.platform.instances.sandbox_of(iid)  # type: ignore[union-attr]
    assert sb.cgroup_read("freezer", "freezer.state").strip() == "FROZEN"
    out = await _exec(inst_env, iid, "echo awake")
    assert out["stdout"] == "awake\n"

    # a connection to an exposed port resumes an auto-paused instance too
    await _exec(
        inst_env,
        iid,
        "mkdir -p /w && echo ttl-page > /w/p.html && "
        "(cd /w && python3 -m http.server 8300 --bind 127.0.0.1 </dev/null >/dev/null 2>&1 &)",
    )
    url = (await inst_env.client.post(f"/api/v1/instances/{iid}/ports", json={"internal_port": 8300})).json()[
        "url"
    ]
    async with httpx.AsyncClient() as direct:
        served = False
        for _ in range(100):  # wait for the server inside (each try also resumes the instance)
            try:
                if (await direct.get(url + "/p.html")).status_code == 200:
                    served = True
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        assert served
        for _ in range(100):
            if (await inst_env.client.get(f"/api/v1/instances/{iid}")).json()["status"] == "paused":
                break
            await asyncio.sleep(0.1)
        assert (await inst_env.client.get(f"/api/v1/instances/{iid}")).json()["auto_paused"] is True
        resp = await direct.get(url + "/p.html")
        assert resp.status_code == 200 and resp.text == "ttl-page\n"
    for _ in range(100):
        if (await inst_env.client.get(f"/api/v1/instances/{iid}")).json()["status"] == "paused":
            break
        await asyncio.sleep(0.1)
    r = await inst_env.client.get(f"/api/v1/instances/{iid}/ports/8300/p.html")
    assert r.status_code == 200 and r.text == "ttl-page\n"
    assert (await inst_env.client.get(f"/api/v1/instances/{iid}")).json()["status"] in ("running", "paused")


async def test_malicious_uploads_rejected(inst_env: InstanceEnv, tmp_path: Path) -> None:
    inst = await _start(inst_env, disk_gb=0.25)
    iid = str(inst["id"])
    victim = tmp_path / "victim"
    victim.mkdir()

    def tar_of(*members: tarfile.TarInfo, data: bytes = b"pwned") -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for m in members:
                if m.isfile():
                    m.size = len(data)
                    tar.addfile(m, io.BytesIO(data))
                else:
                    tar.addfile(m)
        return buf.getvalue()

    dotdot = tarfile.TarInfo(f"../../../../../../{victim}/dotdot")
    absolute = tarfile.TarInfo(f"{victim}/absolute")
    link = tarfile.TarInfo("esc")
    link.type, link.linkname = tarfile.SYMTYPE, str(victim)
    through = tarfile.TarInfo("esc/through")
    rel_link = tarfile.TarInfo("up")
    rel_link.type, rel_link.linkname = tarfile.SYMTYPE, "../../../../.."
    hard = tarfile.TarInfo("hard")
    hard.type, hard.linkname = tarfile.LNKTYPE, "../etc/passwd"
    dev = tarfile.TarInfo("dev")
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    for archive in (
        tar_of(dotdot),
        tar_of(absolute),
        tar_of(link, through),
        tar_of(rel_link),
        tar_of(hard),
        tar_of(dev),
        b"not a tar at all",
    ):
        r = await inst_env.client.put(
            f"/api/v1/instances/{iid}/files", params={"path": "/up"}, content=archive
        )
        assert r.status_code == 400, r.text
    for path in ("../../etc/x", "/etc/passwd"):
        r = await inst_env.client.put(
            f"/api/v1/instances/{iid}/files",
            json={"target_path": "/up", "files": [{"path": path, "content": "eA=="}]},
        )
        assert r.status_code == 400, r.text
    r = await inst_env.client.put(
        f"/api/v1/instances/{iid}/files", params={"path": "/a/../b"}, content=tar_of(tarfile.TarInfo("ok"))
    )
    assert r.status_code == 400
    assert list(victim.iterdir()) == []
    out = await _exec(inst_env, iid, "ls -A /up 2>/dev/null | wc -l")
    assert out["stdout"].strip() == "0"


async def test_reconcile_marks_vanished_instances_stopped(inst_env: InstanceEnv) -> None:
    svc = inst_env.platform.instances
    assert svc is not None
    inst = await _start(inst_env, disk_gb=0.25)
    iid = str(inst["id"])
    await _exec(inst_env, iid, "echo kept > /kept")
    await inst_env.client.post(f"/api/v1/instances/{iid}/stop")
    await inst_env.client.post(f"/api/v1/instances/{iid}/start")
    # the sandbox vanishes behind the service's back (as after a daemon crash)
    live = svc.registry.live.pop(iid)
    await live.sandbox.destroy()
    assert svc.reconcile() == [iid]
    got = (await inst_env.client.get(f"/api/v1/instances/{iid}")).json()
    assert got["status"] == "stopped" and got["sandbox_id"] is None and "restarted" in got["error"]
    r = await inst_env.client.post(f"/api/v1/instances/{iid}/start")
    assert r.status_code == 200, r.text
    assert (await _exec(inst_env, iid, "cat /kept"))["stdout"] == "kept\n"


async def test_daemon_close_stops_instances_keeping_files(inst_env: InstanceEnv) -> None:
    svc = inst_env.platform.instances
    assert svc is not None
    inst = await _start(inst_env, disk_gb=0.25)
    iid = str(inst["id"])
    await _exec(inst_env, iid, "echo survived > /at-shutdown")
    await svc.close()
    assert svc.get(iid).status == "stopped"
    await svc.start(iid)
    assert (await _exec(inst_env, iid, "cat /at-shutdown"))["stdout"] == "survived\n"
