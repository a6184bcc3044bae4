"""The served OpenAPI document is the contract: every answer's status, content type and body conform.

One schemathesis suite, in-process (the app over the platform test double): schema-driven fuzzing of
every operation, no route ever answers with a 5xx or a non-JSON error, and each answer conforms to the
document. tests/integration/fuzz runs the same checks against a real daemon."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from faasd.api.app import create_app
from faasd.config import Settings
from faasd.platform.core import Platform

pytestmark = [pytest.mark.unit, pytest.mark.slow]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SKIP = ("/system/logs", "/api/v1/functions/{name}/invoke-stream")  # follow=true streams never end here


def test_document_declares_errors_and_content_types(tmp_path: Path, api_factory: object) -> None:
    s = Settings(data_dir=tmp_path, run_dir=tmp_path / "run", cache_dir=tmp_path / "cache", auth=False)
    doc = create_app(s, Platform(s, api_factory), manage_platform=False).openapi()  # type: ignore[arg-type]
    ops = [(m, p, op) for p, item in doc["paths"].items() for m, op in item.items()]
    assert len(ops) >= 70
    for method, path, op in ops:
        codes = set(op["responses"])
        assert "500" in codes, (method, path)
        if path not in ("/health", "/healthz"):
            assert {"400", "401", "403", "404", "413", "422", "429"} <= codes, (method, path, codes)
        err = op["responses"]["500"]["content"]["application/json"]["schema"]
        assert err == {"$ref": "#/components/schemas/ErrorBody"}
    paths = doc["paths"]
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert list(paths["/system/logs"]["get"]["responses"]["200"]["content"]) == ["application/x-ndjson"]
    assert (
        "text/event-stream"
        in paths["/api/v1/functions/{name}/invoke-stream"]["post"]["responses"]["200"]["content"]
    )
    assert "202" in paths["/system/functions"]["post"]["responses"]
    assert "default" in paths["/api/v1/functions/{name}/invoke"]["post"]["responses"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_every_answer_conforms(tmp_path: Path, api_factory: object) -> None:
    s = Settings(data_dir=tmp_path, run_dir=tmp_path / "run", cache_dir=tmp_path / "cache", auth=False)
    app = create_app(s, Platform(s, api_factory), manage_platform=False)  # type: ignore[arg-type]
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: dict[str, str] = {}
    with TestClient(app) as c:
        c.post("/api/v1/functions", json={"name": "hello", "image": "img"})
        for result in schema.get_all_operations():
            op = result.ok()
            if op.path in SKIP:
                continue

            @given(case=op.as_strategy())
            @hsettings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case: schemathesis.Case) -> None:
                r = case.call()
                # 503 is by design here: the test double has no image store or sandboxes
                checks = CHECKS[1:] if r.status_code == 503 else CHECKS
                try:
                    case.validate_response(r, checks=checks)
                except BaseException as exc:  # a failure group naming each failed check
                    failures.setdefault(case.operation.label, f"{r.status_code}: {str(exc)[:600]}")
                if r.status_code >= 400:  # every error is the JSON ErrorBody, whatever the document says
                    try:
                        body = r.json()
                    except ValueError:
                        body = None
                    if not (isinstance(body, dict) and {"error", "message"} <= set(body)):
                        failures.setdefault(case.operation.label, f"error body {r.text[:200]}")

            check()
    assert not failures, "\n\n".join(f"{k}: {v}" for k, v in failures.items())
