"""Cross-tenant attacks and namespace quotas against the real API and platform (runc sandboxes, CRIU
snapshots, SQLite): a key bound to namespace ``team-b`` attacks every kind of object ``team-a`` owns
(function, secret, execution, instance, snapshot, restored sandbox, job) by id and by listing; each must
answer as if the object did not exist (404, absent from lists), naming ``team-a`` outright is a 403, and
``team-a``'s objects are untouched afterwards. Quotas refuse with 429/507 and create nothing."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from faasd.api.app import create_app
from faasd.config import Settings
from faasd.platform.core import Platform
from faasd.testing.leaks import leak_checked_platform

pytestmark = [pytest.mark.security, pytest.mark.timeout(900)]

HANDLER = "def handle(req):\n    return open('/run/secrets/tok').read() + ':' + req.body.decode()\n"
IMAGE = "tenants-fn:latest"


@dataclass
class Tenants:
    c: httpx.AsyncClient
    platform: Platform
    admin: dict[str, str]
    a: dict[str, str]
    b: dict[str, str]
    app: Any = None

    async def ok(self, method: str, path: str, who: dict[str, str], status: int = 200, **kw: Any) -> Any:
        r = await self.c.request(method, path, headers=who, **kw)
        assert r.status_code == status, (method, path, r.status_code, r.text)
        return (
            r.json() if r.content and r.headers.get("content-type", "").startswith("application/json") else r
        )

    async def absent(self, method: str, path: str, **kw: Any) -> None:
        """``team-b``'s key gets exactly what an id that does not exist gets."""
        r = await self.c.request(method, path, headers=self.b, **kw)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert r.json()["error"] == "not_found", r.text


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def t(settings: Settings, tmp_path: Path) -> AsyncIterator[Tenants]:
    from faasd.baseimages import ensure_base_images
    from faasd.images.store import ImageStore

    s = settings.model_copy(update={"auth": True})
    store = ImageStore(s)
    ensure_base_images(store, ["python"], settings=s)
    src = tmp_path / "src"
    src.mkdir()
    (src / "handler.py").write_text(HANDLER)
    store.add_layer("faasd/python:latest", src, ref=IMAGE)
    async with leak_checked_platform(s, store) as pe:
        admin_token = pe.platform.keys.bootstrap_admin(s.data_dir / "admin.key")
        assert admin_token is not None
        app = create_app(s, pe.platform, manage_platform=False)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://faasd.test", timeout=300
        ) as c:
            admin = _bearer(admin_token)
            keys = {}
            for ns in ("team-a", "team-b"):
                assert (
                    await c.post("/api/v1/namespaces", json={"name": ns}, headers=admin)
                ).status_code == 201
                r = await c.post(
                    "/api/v1/keys", json={"name": ns, "scopes": ["deploy"], "namespace": ns}, headers=admin
                )
                assert r.status_code == 201, r.text
                keys[ns] = _bearer(r.json()["key"])
            yield Tenants(c, pe.platform, admin, keys["team-a"], keys["team-b"], app)
            for inst in (await c.get("/api/v1/instances", headers=admin)).json()["instances"]:
                await c.delete(f"/api/v1/instances/{inst['id']}", headers=admin)
            for sb in (await c.get("/api/v1/sandboxes", headers=admin)).json()["sandboxes"]:
                await c.delete(f"/api/v1/sandboxes/{sb['id']}", headers=admin)


async def test_namespaced_key_cannot_list_read_invoke_snapshot_or_delete_another_tenants_objects(
    t: Tenants,
) -> None:
    # team-a's objects: a secret, a function using it (a real worker), an execution, an instance, a CRIU
    # snapshot of it, a sandbox restored from that snapshot, a job
    await t.ok("POST", "/api/v1/secrets", t.a, 201, json={"name": "tok", "value": "A-secret"})
    fn = {"name": "fa", "image": IMAGE, "secrets": ["tok"]}
    await t.ok("POST", "/api/v1/functions", t.a, 201, json=fn)
    r = await t.ok("POST", "/api/v1/functions/fa/invoke", t.a, content=b"x")
    assert r.content == b"A-secret:x"
    ex_id = r.headers["x-execution-id"]
    inst = await t.ok("POST", "/api/v1/instances", t.a, 201, json={"memory_mb": 256, "disk_gb": 0.25})
    iid = inst["id"]
    assert inst["namespace"] == "team-a"
    snap = await t.ok("POST", "/api/v1/snapshots", t.a, 201, json={"instance_id": iid})
    sid = snap["id"]
    assert snap["namespace"] == "team-a"
    worker_id = t.platform.runner.pools["fa.team-a"].worker_ids()[0]
    fsnap = await t.ok("POST", "/api/v1/snapshots", t.a, 201, json={"function": "fa"})
    restored = await t.ok("POST", f"/api/v1/snapshots/{fsnap['id']}/restore", t.a, 201)
    rid = restored["id"]
    assert restored["namespace"] == "team-a"
    job = await t.ok(
        "POST", "/api/v1/jobs", t.a, json={"type": "pause_instance", "args": {"instance_id": iid}}
    )
    await t.ok("POST", f"/api/v1/instances/{iid}/resume", t.a)

    # lists: nothing of team-a
    for path, field in [
        ("/api/v1/functions", "functions"),
        ("/api/v1/secrets", "secrets"),
        ("/api/v1/executions", "executions"),
        ("/api/v1/instances", "instances"),
        ("/api/v1/snapshots", "snapshots"),
        ("/api/v1/sandboxes", "sandboxes"),
        ("/api/v1/jobs", "jobs"),
    ]:
        assert (await t.ok("GET", path, t.b))[field] == [], path
    assert await t.ok("GET", "/system/functions", t.b) == []
    assert (await t.ok("GET", "/api/v1/pools", t.b))["functions"] == []

    # read / invoke / snapshot / delete by id: 404, as if absent
    for method, path in [
        ("GET", "/api/v1/functions/fa"),
        ("POST", "/api/v1/functions/fa/invoke"),
        ("GET", "/api/v1/functions/fa/logs"),
        ("DELETE", "/api/v1/functions/fa"),
        ("DELETE", "/api/v1/secrets/tok"),
        ("GET", f"/api/v1/executions/{ex_id}"),
        ("GET", f"/api/v1/executions/{ex_id}/logs"),
        ("GET", f"/api/v1/logs/{ex_id}/stream"),
        ("GET", f"/api/v1/instances/{iid}"),
        ("POST", f"/api/v1/instances/{iid}/stop"),
        ("POST", f"/api/v1/instances/{iid}/pause"),
        ("GET", f"/api/v1/instances/{iid}/files?path=/etc/hostname"),
        ("DELETE", f"/api/v1/instances/{iid}"),
        ("GET", f"/api/v1/snapshots/{sid}"),
        ("POST", f"/api/v1/snapshots/{sid}/restore"),
        ("DELETE", f"/api/v1/snapshots/{sid}"),
        ("GET", f"/api/v1/sandboxes/{rid}"),
        ("POST", f"/api/v1/sandboxes/{rid}/invoke"),
        ("DELETE", f"/api/v1/sandboxes/{rid}"),
        ("GET", f"/api/v1/jobs/{job['job_id']}"),
    ]:
        await t.absent(method, path)
    await t.absent("PUT", "/api/v1/secrets/tok", json={"value": "stolen"})
    await t.absent("POST", f"/api/v1/instances/{iid}/exec", json={"command": ["cat", "/etc/hostname"]})
    await t.absent("POST", f"/api/v1/snapshots/{sid}/branch", json={"count": 1})
    for body in (
        {"instance_id": iid},
        {"sandbox_id": inst["sandbox_id"]},
        {"sandbox_id": rid},
        {"sandbox_id": worker_id},
        {"function": "fa"},
    ):
        await t.absent("POST", "/api/v1/snapshots", json=body)
    await t.absent("POST", "/api/v1/merges", json={"branches": [sid, fsnap["id"]], "strategy": "union"})
    await t.absent("POST", "/api/v1/instances", json={"snapshot_id": sid})
    for job_type, args in [
        ("stop_instance", {"instance_id": iid}),
        ("restore_snapshot", {"snapshot_id": sid}),
        ("create_snapshot", {"container_id": iid}),
        ("merge_branches", {"branch_ids": [sid, fsnap["id"]]}),
        ("upload_files", {"instance_id": iid, "files_data": [{"path": "x", "content": "eA=="}]}),
    ]:
        await t.absent("POST", "/api/v1/jobs", json={"type": job_type, "args": args})
    # team-a's secret cannot be mounted into a team-b function
    r = await t.c.post("/api/v1/functions", json={**fn, "name": "fb"}, headers=t.b)
    assert r.status_code == 400 and "tok" in r.json()["message"], r.text
    # naming team-a outright: 403
    for path in (
        "/api/v1/functions?namespace=team-a",
        "/api/v1/instances?namespace=team-a",
        f"/api/v1/instances/{iid}?namespace=team-a",
        "/api/v1/snapshots?namespace=team-a",
    ):
        r = await t.c.get(path, headers=t.b)
        assert r.status_code == 403 and r.json()["error"] == "forbidden", (path, r.text)

    # team-a's objects are intact and still work
    assert (await t.ok("GET", f"/api/v1/instances/{iid}", t.a))["status"] == "running"
    out = await t.ok("POST", f"/api/v1/instances/{iid}/exec", t.a, json={"command": ["true"]})
    assert out["exit_code"] == 0
    await t.ok("GET", f"/api/v1/snapshots/{sid}", t.a)
    await t.ok("GET", f"/api/v1/sandboxes/{rid}", t.a)
    r = await t.ok("POST", "/api/v1/functions/fa/invoke", t.a, content=b"y")
    assert r.content == b"A-secret:y"
    assert t.platform.secrets.values(["tok"], "team-a") == {"tok": b"A-secret"}


async def test_quotas_answer_429_and_507_and_create_nothing(t: Tenants) -> None:
    ns = {"name": "team-q", "max_sandboxes": 1, "max_snapshots": 1}
    await t.ok("POST", "/api/v1/namespaces", t.admin, 201, json=ns)
    r = await t.ok(
        "POST", "/api/v1/keys", t.admin, 201, json={"name": "q", "scopes": ["deploy"], "namespace": "team-q"}
    )
    q = _bearer(r["key"])
    small = {"memory_mb": 256, "disk_gb": 0.25}
    iid = (await t.ok("POST", "/api/v1/instances", q, 201, json=small))["id"]
    sandboxes_before = set(t.platform.instances.registry.live) if t.platform.instances else set()

    r = await t.c.post("/api/v1/instances", json=small, headers=q)
    assert r.status_code == 429 and r.json()["error"] == "quota_exceeded", r.text
    assert r.json()["details"]["quota"] == "max_sandboxes" and "limit is 1" in r.json()["message"]
    await t.ok("POST", "/api/v1/functions", q, 201, json={"name": "fq", "image": IMAGE})
    r = await t.c.post("/api/v1/functions/fq/invoke", content=b"", headers=q)
    assert r.status_code == 429 and r.json()["details"]["quota"] == "max_sandboxes", r.text
    assert t.platform.runner.live_workers("fq.team-q") == 0

    await t.ok("POST", "/api/v1/snapshots", q, 201, json={"instance_id": iid})
    r = await t.c.post("/api/v1/snapshots", json={"instance_id": iid}, headers=q)
    assert r.status_code == 429 and r.json()["details"]["quota"] == "max_snapshots", r.text

    usage = (await t.ok("GET", "/api/v1/namespaces/team-q", q))["usage"]
    assert usage["sandboxes"] == 1 and usage["snapshots"] == 1 and usage["memory_mb"] == 256
    await t.ok(
        "PATCH",
        "/api/v1/namespaces/team-q",
        t.admin,
        json={"max_snapshots": None, "max_sandboxes": 4, "max_disk_mb": usage["disk_mb"]},
    )
    r = await t.c.post("/api/v1/snapshots", json={"instance_id": iid}, headers=q)
    assert r.status_code == 507 and r.json()["error"] == "storage_quota_exceeded", r.text
    r = await t.c.post("/api/v1/instances", json={"memory_mb": 256, "disk_gb": 1}, headers=q)
    assert r.status_code == 507 and r.json()["details"]["quota"] == "max_disk_mb", r.text
    r = await t.c.post("/api/v1/jobs", json={"type": "start_instance", "args": small}, headers=q)
    assert r.status_code == 507, r.text

    # nothing was created by the refused requests
    assert [i["id"] for i in (await t.ok("GET", "/api/v1/instances", q))["instances"]] == [iid]
    assert len((await t.ok("GET", "/api/v1/snapshots", q))["snapshots"]) == 1
    live = set(t.platform.instances.registry.live) if t.platform.instances else set()
    assert live == sandboxes_before
    after = (await t.ok("GET", "/api/v1/namespaces/team-q", q))["usage"]
    assert after == usage
    # another namespace is not bound by team-q's quotas
    other = await t.ok("POST", "/api/v1/instances", t.a, 201, json=small)
    await t.ok("DELETE", f"/api/v1/instances/{other['id']}", t.a, 204)


BOOTSTRAP = '#!/bin/sh\nread -r line || true\necho "$WHO:$line"\n'


def _zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o100755 << 16
            zf.writestr(info, text)
    return buf.getvalue()


async def test_blueprint_zip_deploy_lands_in_the_keys_namespace(t: Tenants) -> None:
    url = "/api/blueprint/functions/bp"

    def cfg(who: str) -> dict[str, str]:
        raw = json.dumps({"env_vars": {"WHO": who}, "max_concurrency": 1})
        return {"X-Blueprint-Config": base64.b64encode(raw.encode()).decode()}

    zipped = _zip({"bootstrap": BOOTSTRAP})
    r = await t.c.put(url, content=zipped, headers={**t.a, **cfg("A")})
    assert r.status_code == 201, r.text
    got = r.json()
    assert got["namespace"] == "team-a" and got["function_id"] == "bp"
    assert (await t.ok("GET", "/api/v1/functions/bp", t.a))["namespace"] == "team-a"
    for method, path in [
        ("GET", url),
        ("GET", url + "/health"),
        ("POST", url + "/warm"),
        ("DELETE", url),
        ("GET", "/api/v1/functions/bp"),
    ]:
        await t.absent(method, path)
    await t.absent("POST", url + "/invoke", json={"args": "x"})
    # team-b's zip with the same id is team-b's own function: team-a's is neither replaced nor reached
    r = await t.c.put(url, content=zipped, headers={**t.b, **cfg("B")})
    assert r.status_code == 201, r.text
    got = r.json()
    assert got["namespace"] == "team-b" and got["image"] != (await t.ok("GET", url, t.a))["image"]
    assert (await t.ok("POST", url + "/invoke", t.b, json={"args": "1"}))["result"] == "B:1\n"
    assert (await t.ok("POST", url + "/invoke", t.a, json={"args": "2"}))["result"] == "A:2\n"
    # naming team-a outright: 403, and nothing is deployed there
    r = await t.c.put(url + "?namespace=team-a", content=zipped, headers={**t.b, **cfg("B")})
    assert r.status_code == 403 and r.json()["error"] == "forbidden", r.text
    await t.ok("DELETE", url, t.b, 204)
    assert (await t.ok("GET", url, t.a))["env_vars"] == {"WHO": "A"}
    assert (await t.ok("POST", url + "/invoke", t.a, json={"args": "3"}))["result"] == "A:3\n"
    await t.ok("DELETE", url, t.a, 204)
    await t.ok("GET", url, t.a, 404)


class AsgiWebSocket:
    """A WebSocket client speaking ASGI straight to the app (no server, no socket)."""

    def __init__(self, app: Any, path: str, headers: dict[str, str]) -> None:
        self.to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        path, _, query = path.partition("?")
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "http_version": "1.1",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"faasd.test")]
            + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("faasd.test", 80),
            "subprotocols": [],
        }
        self.close_code: int | None = None
        self.task = asyncio.get_running_loop().create_task(app(scope, self.to_app.get, self.from_app.put))

    async def connect(self) -> None:
        await self.to_app.put({"type": "websocket.connect"})
        assert (await asyncio.wait_for(self.from_app.get(), 60))["type"] == "websocket.accept"

    async def recv(self) -> dict[str, Any] | None:
        """The next JSON message; None once the app closed (its code in ``close_code``)."""
        msg = await asyncio.wait_for(self.from_app.get(), 120)
        if msg["type"] == "websocket.close":
            self.close_code = msg.get("code", 1000)
            return None
        assert msg["type"] == "websocket.send", msg
        return dict(json.loads(msg["text"]))

    async def send(self, obj: dict[str, Any]) -> None:
        await self.to_app.put({"type": "websocket.receive", "text": json.dumps(obj)})

    async def disconnect(self) -> None:
        await self.to_app.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self.task, 60)


async def test_namespaced_key_cannot_stream_into_or_forward_to_another_tenants_instance(t: Tenants) -> None:
    app = t.app
    inst = await t.ok(
        "POST", "/api/v1/instances", t.a, 201, json={"image": "faasd/python:latest", "disk_gb": 0.25}
    )
    iid = inst["id"]

    # the container stream WebSocket: team-b's key gets what an unknown id gets (error + close 4404)
    async def refused(ref: str) -> dict[str, Any]:
        ws = AsgiWebSocket(app, f"/api/v1/containers/{ref}/stream?heartbeat_s=60", t.b)
        await ws.connect()
        first = await ws.recv()
        assert await ws.recv() is None and ws.close_code == 4404
        await asyncio.wait_for(ws.task, 60)
        assert first is not None and first["type"] == "error" and first["error"] == "not_found"
        return first

    unknown = await refused("inst-doesnotexist")
    for ref in (iid, inst["sandbox_id"]):
        got = await refused(ref)
        assert got["message"] == unknown["message"].replace("inst-doesnotexist", ref)
    # team-a's key streams a command into its own instance
    ws = AsgiWebSocket(app, f"/api/v1/containers/{iid}/stream?heartbeat_s=60", t.a)
    await ws.connect()
    await ws.send(
        {
            "type": "exec",
            "command": "mkdir -p /site && echo a-site > /site/index.html && echo started && "
            "(cd /site && python3 -m http.server 8000 --bind 127.0.0.1 </dev/null >/dev/null 2>&1 &)",
        }
    )
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["type"] != "exit":
        msg = await ws.recv()
        assert msg is not None, seen
        seen.append(msg)
    assert seen[-1]["exit_code"] == 0 and {"type": "stdout", "data": "started\n"} in seen, seen
    await ws.disconnect()

    # the port forward: team-b can neither expose team-a's port nor reach an exposed one
    await t.absent("POST", f"/api/v1/instances/{iid}/ports", json={"internal_port": 8000})
    await t.ok("POST", f"/api/v1/instances/{iid}/ports", t.a, json={"internal_port": 8000})
    body = None
    for _ in range(100):  # the server inside may still be starting
        r = await t.c.get(f"/api/v1/instances/{iid}/ports/8000/index.html", headers=t.a)
        if r.status_code == 200:
            body = r.text
            break
        await asyncio.sleep(0.1)
    assert body == "a-site\n"
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        await t.absent(method, f"/api/v1/instances/{iid}/ports/8000/index.html")
    await t.absent("GET", f"/api/v1/instances/{inst['sandbox_id']}/ports/8000/index.html")
    r = await t.c.get(f"/api/v1/instances/{iid}/ports/8000/index.html?namespace=team-a", headers=t.b)
    assert r.status_code == 403 and r.json()["error"] == "forbidden", r.text
    # team-a's instance is untouched and still serves its own key
    assert (await t.ok("GET", f"/api/v1/instances/{iid}", t.a))["status"] == "running"
    r = await t.c.get(f"/api/v1/instances/{iid}/ports/8000/index.html", headers=t.a)
    assert r.status_code == 200 and r.text == "a-site\n"
