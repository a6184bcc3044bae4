"""Job 0/1/11 with the seed's argument types, against a real daemon: env_vars as ["K=V"], payload as a
list of byte values / base64 / text, files_data as a base64 tar archive."""

from __future__ import annotations

import base64
import io
import tarfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from faasd.testing.leaks import leak_checked_server
from faasd.testing.server import FaasdServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

SHOW = ["python3", "-c", "import os,sys; d=sys.stdin.buffer.read(); print(list(d), os.environ.get('FOO'))"]


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with leak_checked_server(env={"FAASD_BASE_IMAGES": "python"}) as srv:
        srv_: FaasdServer = srv
        headers = {"Authorization": f"Bearer {srv_.api_key}"}
        with httpx.Client(base_url=srv_.url, headers=headers, timeout=300) as c:
            yield c


def job(http: httpx.Client, type_: int, args: dict[str, Any], status: int = 200) -> dict[str, Any]:
    r = http.post("/api/v1/jobs", json={"type": type_, "args": args})
    assert r.status_code == status, r.text
    out: dict[str, Any] = r.json()
    return out


def test_job0_with_the_seeds_argument_types(http: httpx.Client) -> None:
    # the seed's job 0: env_vars as ["K=V"], payload as Vec<u8> (including bytes that are not UTF-8)
    r = job(
        http,
        0,
        {"image": "faasd/python:latest", "command": SHOW, "env_vars": ["FOO=bar"], "payload": [0, 255, 65]},
    )
    assert r["status"] == "succeeded" and r["result"]["stdout"] == "[0, 255, 65] bar\n", r
    b64 = base64.b64encode(b"\x01\x02").decode()
    r = job(
        http, 0, {"command": SHOW, "payload": b64, "payload_encoding": "base64", "env_vars": {"FOO": "obj"}}
    )
    assert r["result"]["stdout"] == "[1, 2] obj\n"
    r = job(http, 0, {"command": SHOW, "payload": "hi"})
    assert r["result"]["stdout"] == "[104, 105] None\n"
    # job 1 restore/checkpoint path (instance exec) takes binary payloads too
    r = job(http, 1, {"command": SHOW, "payload": [7, 200], "env_vars": ["FOO=adv"], "mode": "checkpoint"})
    assert r["result"]["stdout"] == "[7, 200] adv\n" and r["result"]["snapshot_id"].startswith("snap-")
    # bad shapes are 422 naming the field
    for bad in (
        {"command": "true", "payload": [256]},
        {"command": "true", "payload": [True]},
        {"command": "true", "env_vars": ["NOEQUALS"]},
        {"command": "true", "payload": "%%%", "payload_encoding": "base64"},
    ):
        r = http.post("/api/v1/jobs", json={"type": 0, "args": bad})
        assert r.status_code == 422 and r.json()["error"] == "validation_error", (bad, r.text)


def test_job11_files_data_as_a_tar_archive(http: httpx.Client) -> None:
    inst = job(http, 6, {"image": "faasd/python:latest"})["result"]
    iid = inst["id"] if "id" in inst else inst["instance_id"]
    try:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            data = b"from-a-tar\n"
            info = tarfile.TarInfo("sub/hello.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        archive = base64.b64encode(buf.getvalue()).decode()
        r = job(http, 11, {"instance_id": iid, "target_path": "/data", "files_data": archive})
        assert r["status"] == "succeeded" and r["result"]["files"] >= 1
        out = http.post(f"/api/v1/instances/{iid}/exec", json={"command": "cat /data/sub/hello.txt"}).json()
        assert out["stdout"] == "from-a-tar\n"
        listed = http.get(f"/api/v1/jobs/{r['job_id']}").json()
        assert listed["args"]["files_data"].startswith("<tar archive")
        bad = http.post("/api/v1/jobs", json={"type": 11, "args": {"instance_id": iid, "files_data": "!!"}})
        assert bad.status_code == 422
    finally:
        http.delete(f"/api/v1/instances/{iid}")
