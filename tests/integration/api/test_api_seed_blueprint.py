"""The seed's zip deploy against a real daemon: deploy, invoke (bootstrap with the payload on stdin),
health, warm (a real worker), redeploy, delete, and refused zips."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Iterator

import httpx
import pytest

from faasd.testing.leaks import leak_checked_server

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

BOOT = '#!/bin/sh\nread -r line || true\necho "got:$line greeting:$GREETING"\necho to-stderr >&2\n'


def _zip(files: dict[str, str], mode: int = 0o100755) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, text)
    return buf.getvalue()


def _config(**cfg: object) -> str:
    return base64.b64encode(json.dumps(cfg).encode()).decode()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with leak_checked_server(env={"FAASD_BASE_IMAGES": "python"}) as srv, httpx.Client(
        base_url=srv.url, headers={"Authorization": f"Bearer {srv.api_key}"}, timeout=300
    ) as c:
        yield c


def test_blueprint_zip_lifecycle(http: httpx.Client) -> None:
    url = "/api/blueprint/functions/bp-echo"
    cfg = _config(memory_mb=128, timeout_secs=20, max_concurrency=2, env_vars=["GREETING=hi"])
    r = http.put(url, content=_zip({"bootstrap": BOOT}, mode=0o100644), headers={"X-Blueprint-Config": cfg})
    assert r.status_code == 201, r.text
    assert r.json()["memory_mb"] == 128 and r.json()["max_concurrency"] == 2
    assert http.get(url).json()["env_vars"] == {"GREETING": "hi"}
    warm = http.post(url + "/warm").json()
    assert warm["started"] is True and warm["replicas"] >= 1
    assert http.get(url + "/health").json()["warm"] >= 1
    r = http.post(url + "/invoke", json={"job_id": 7, "args": "payload-1"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (
        out["job_id"] == 7 and out["result"] == "got:payload-1 greeting:hi\n" and out["cold_start"] is False
    )
    assert (
        http.post(url + "/invoke", json={"job_id": 8, "args": [104, 105]})
        .json()["result"]
        .startswith("got:hi ")
    )
    # redeploy replaces code and config
    cfg2 = _config(env_vars={"GREETING": "v2"})
    r = http.put(
        url, content=_zip({"bootstrap": BOOT, "data/x.txt": "x"}), headers={"X-Blueprint-Config": cfg2}
    )
    assert r.status_code == 200, r.text
    assert http.post(url + "/invoke", json={"args": "p"}).json()["result"] == "got:p greeting:v2\n"
    assert http.delete(url).status_code == 204
    assert http.get(url).status_code == 404


def test_blueprint_refuses_bad_zips(http: httpx.Client) -> None:
    url = "/api/blueprint/functions/bp-bad"
    assert http.put(url, content=b"not a zip").status_code == 400
    assert http.put(url, content=_zip({"run.sh": "x"})).status_code == 400  # no bootstrap
    r = http.put(url, content=_zip({"../bootstrap": "x"}))
    assert r.status_code == 400 and "escapes" in r.json()["message"]
    r = http.put(url, content=_zip({"bootstrap": "x"}), headers={"X-Blueprint-Config": "%%%"})
    assert r.status_code == 400
    r = http.put(
        url, content=_zip({"bootstrap": "x"}), headers={"X-Blueprint-Config": _config(memory_mb=False)}
    )
    assert r.status_code == 400
    assert http.get(url).status_code == 404
