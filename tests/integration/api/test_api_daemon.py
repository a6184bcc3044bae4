"""A real ``faasd`` daemon process on a dynamic port: the HTTP API end to end (its crash recovery after a
kill -9 is in tests/chaos/test_chaos_daemon.py)."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time

import httpx
import pytest

from faasd.testing.leaks import runc_ids
from fixtures.daemon import Daemon, daemon_env, wait_status

pytestmark = [pytest.mark.integration, pytest.mark.slow]
__all__ = ["daemon_env"]  # the fixture, imported to be found by pytest


def test_http_api_end_to_end(daemon_env: tuple[Daemon, str], unique_id: str) -> None:
    d, image = daemon_env
    d.start()
    key_file = d.settings.data_dir / "admin.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    admin = key_file.read_text().strip()
    anon = httpx.get(d.url + "/api/v1/functions")
    assert anon.status_code == 401 and anon.json()["error"] == "unauthorized"

    got: list[tuple[dict[str, str], bytes]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            n = int(self.headers.get("content-length", "0"))
            got.append(({k.lower(): v for k, v in self.headers.items()}, self.rfile.read(n)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        basic = base64.b64encode(f"admin:{admin}".encode()).decode()
        with httpx.Client(base_url=d.url, headers={"Authorization": f"Bearer {admin}"}, timeout=60) as c:
            # faas-cli style deploy (Basic auth) with annotations selecting the python runtime
            r = c.post(
                "/system/functions",
                headers={"Authorization": f"Basic {basic}"},
                json={
                    "service": unique_id,
                    "image": image,
                    "annotations": {"faasd.runtime": "python"},
                    "labels": {"com.openfaas.scale.min": "1"},
                    "envVars": {"A": "1"},
                },
            )
            assert r.status_code == 202, r.text
            r = c.post(f"/function/{unique_id}", content=b"hello")
            assert r.status_code == 200 and r.content == b"echo:hello", r.text
            r = c.post(f"/api/v1/functions/{unique_id}/invoke", content=b"native")
            assert r.status_code == 200 and r.content == b"echo:native"
            assert r.headers["x-cold-start"] == "false"  # min=1 pre-warmed the pool
            cb = f"http://127.0.0.1:{srv.server_address[1]}/done"
            r = c.post(f"/async-function/{unique_id}", content=b"bg", headers={"X-Callback-Url": cb})
            assert r.status_code == 202
            ex = wait_status(c, r.headers["x-call-id"], {"succeeded", "failed"})
            assert ex["status"] == "succeeded" and ex["result"] == "echo:bg"
            deadline = time.monotonic() + 20
            while not got and time.monotonic() < deadline:
                time.sleep(0.1)
            assert got and got[0][1] == b"echo:bg" and got[0][0]["x-call-id"] == ex["id"]
            with c.stream("POST", f"/api/v1/functions/{unique_id}/invoke-stream", content=b"s") as sr:
                text = "".join(sr.iter_text())
            assert "event: result" in text and "echo:s" in text
            logs = c.get("/system/logs", params={"name": unique_id, "tail": 100}).text.splitlines()
            assert any(json.loads(ln)["text"] == "got hello" for ln in logs)
            # follow: history first, then lines of new invocations as they happen
            seen: list[str] = []
            with c.stream(
                "GET", "/system/logs", params={"name": unique_id, "tail": 1, "follow": "true"}
            ) as fr:
                lines = fr.iter_lines()
                seen.append(json.loads(next(lines))["text"])
                t = threading.Thread(target=lambda: c.post(f"/function/{unique_id}", content=b"followed"))
                t.start()
                for ln in lines:
                    seen.append(json.loads(ln)["text"])
                    if seen[-1] == "got followed":
                        break
                t.join(30)
            assert seen[-1] == "got followed" and len(seen) >= 2
            r = c.post(f"/api/v1/functions/{unique_id}/scale", json={"replicas": 2})
            assert r.json()["replicas"] == 2
            r = c.post("/api/v1/execute", json={"code": "print(1+1)", "language": "python"})
            assert r.status_code == 200 and r.json()["stdout"] == "2\n"
            metrics = c.get("/metrics").text
            assert f'faasd_invocations_total{{function="{unique_id}",status="succeeded"}}' in metrics
            assert (
                c.request("DELETE", "/system/functions", json={"functionName": unique_id}).status_code == 202
            )
            assert c.get(f"/system/function/{unique_id}").status_code == 404
    finally:
        srv.shutdown()
    d.stop_gracefully()
    assert runc_ids(d.settings.runc_root) == set()
