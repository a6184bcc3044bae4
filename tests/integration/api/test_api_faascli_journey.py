"""faas-cli 0.16's requests, byte for byte as ``FAAS_DEBUG=1`` shows them, replayed against a real daemon.

login/list/deploy (PUT, then POST on 404)/describe/invoke (no credentials)/invoke --async/logs (tail=-1)/
secret create/list/update/remove (200)/remove, with environment, labels, annotations, limits and secrets
round-tripping through ``describe`` and reaching the function's sandbox.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from faasd.testing.leaks import leak_checked_server
from faasd.testing.server import FaasdServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

UA = {"User-Agent": "faas-cli/0.16.11"}


@pytest.fixture(scope="module")
def server() -> Iterator[FaasdServer]:
    with leak_checked_server(env={"FAASD_BASE_IMAGES": "python"}) as srv:
        yield srv


def _basic(server: FaasdServer) -> dict[str, str]:
    token = base64.b64encode(f"admin:{server.api_key}".encode()).decode()
    return {**UA, "Authorization": f"Basic {token}"}


def _deployment(name: str, secret: str, greeting: str) -> dict[str, object]:
    # types.FunctionDeployment as faas-cli 0.16 marshals it from a stack.yml
    return {
        "service": name,
        "image": "faasd/python:latest",
        "network": "",
        "envProcess": f'echo "$GREETING"; cat /var/openfaas/secrets/{secret}; echo; echo to-the-log >&2; cat',
        "envVars": {"GREETING": greeting},
        "constraints": [],
        "secrets": [secret],
        "labels": {"team": "blue", "com.openfaas.scale.min": "0"},
        "annotations": {"topic": "faas-cli-journey"},
        "limits": {"memory": "96Mi", "cpu": "250m"},
        "requests": None,
        "readOnlyRootFilesystem": False,
        "namespace": "openfaas-fn",
    }


def _deploy(http: httpx.Client, auth: dict[str, str], body: dict[str, object]) -> list[int]:
    """faas-cli's deploy: PUT first, POST when the function does not exist (404)."""
    statuses = []
    r = http.put(
        "/system/functions", content=json.dumps(body), headers={**auth, "Content-Type": "application/json"}
    )
    statuses.append(r.status_code)
    if r.status_code == 404:
        r = http.post(
            "/system/functions",
            content=json.dumps(body),
            headers={**auth, "Content-Type": "application/json"},
        )
        statuses.append(r.status_code)
    assert r.status_code in (200, 201, 202), r.text
    return statuses


def test_faas_cli_journey(server: FaasdServer) -> None:
    name = "cli-" + uuid.uuid4().hex[:8]
    secret = name + "-key"
    auth = _basic(server)
    with httpx.Client(base_url=server.url, timeout=180) as http:
        # login validates the credentials with a list
        assert http.get("/system/functions", headers=auth).status_code == 200
        assert http.get("/system/functions", headers=UA).status_code == 401

        # secret create / list / update
        r = http.post("/system/secrets", json={"name": secret, "value": "s3cret-1"}, headers=auth)
        assert r.status_code in (200, 201, 202), r.text
        listed = http.get("/system/secrets", params={"namespace": "openfaas-fn"}, headers=auth).json()
        assert {"name": secret, "namespace": "openfaas-fn"} in listed
        raw = base64.b64encode(b"s3cret-2").decode()
        assert http.put(
            "/system/secrets", json={"name": secret, "rawValue": raw}, headers=auth
        ).status_code in (
            200,
            202,
        )

        # deploy: PUT -> 404 -> POST
        assert _deploy(http, auth, _deployment(name, secret, "hello")) == [404, 202]

        # describe round-trips what the stack said
        d = http.get(f"/system/function/{name}", params={"namespace": "openfaas-fn"}, headers=auth).json()
        assert d["envVars"] == {"GREETING": "hello"}
        assert d["labels"]["team"] == "blue" and d["annotations"] == {"topic": "faas-cli-journey"}
        assert d["limits"] == {"memory": "96Mi", "cpu": "250m"}
        assert d["secrets"] == [secret] and d["image"] == "faasd/python:latest"
        assert name in [f["name"] for f in http.get("/system/functions", headers=auth).json()]

        # invoke: no Authorization header at all
        r = http.post(f"/function/{name}", content=b"payload-1", headers={**UA, "Content-Type": "text/plain"})
        assert r.status_code == 200, r.text
        assert r.text.split("\n")[:3] == ["hello", "s3cret-2", "payload-1"], r.text

        # invoke --async: 202 with a call id; the execution completes
        r = http.post(
            f"/async-function/{name}", content=b"payload-2", headers={**UA, "Content-Type": "text/plain"}
        )
        assert r.status_code == 202 and r.headers["X-Call-Id"]
        call_id = r.headers["X-Call-Id"]
        bearer = {"Authorization": f"Bearer {server.api_key}"}
        deadline = time.monotonic() + 120
        while True:
            ex = http.get(f"/api/v1/executions/{call_id}", headers=bearer).json()
            if ex["status"] not in ("queued", "running"):
                break
            assert time.monotonic() < deadline, ex
            time.sleep(0.3)
        assert ex["status"] == "succeeded", ex

        # redeploy (PUT succeeds now): the new environment reaches the sandbox
        assert _deploy(http, auth, _deployment(name, secret, "again")) == [202]
        r = http.post(f"/function/{name}", content=b"p3", headers={**UA, "Content-Type": "text/plain"})
        assert r.text.startswith("again\n"), r.text

        # logs: tail=-1 means every line
        since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        r = http.get(
            "/system/logs",
            params={"name": name, "tail": "-1", "follow": "false", "since": since},
            headers=auth,
        )
        assert r.status_code == 200, r.text
        lines = [json.loads(line) for line in r.text.splitlines()]
        texts = [line["text"] for line in lines]
        assert sum("to-the-log" in t for t in texts) >= 3, texts  # three invocations
        assert all(line["name"] == name for line in lines)

        # remove function, then secret remove: 200 as the gateway answers (faas-cli accepts 200/202 only)
        r = http.request("DELETE", "/system/functions", json={"functionName": name}, headers=auth)
        assert r.status_code in (200, 202)
        assert http.get(f"/system/function/{name}", headers=auth).status_code == 404
        r = http.request("DELETE", "/system/secrets", json={"name": secret}, headers=auth)
        assert r.status_code == 200, r.text
        assert secret not in [s["name"] for s in http.get("/system/secrets", headers=auth).json()]
