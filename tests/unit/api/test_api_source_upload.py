"""Multipart create/update requests (source deploy) are parsed strictly; errors are JSON 4xx."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.unit


def _parts(function: object, source: bytes | None = b"\x1f\x8b", extra: bool = False) -> dict:  # type: ignore[type-arg]
    files: list[tuple[str, tuple[str | None, bytes, str]]] = [
        ("function", (None, json.dumps(function).encode(), "application/json"))
    ]
    if source is not None:
        files.append(("source", ("source.tar.gz", source, "application/gzip")))
    if extra:
        files.append(("other", (None, b"x", "text/plain")))
    return {"files": files}


def test_info_says_no_source_deploy_without_an_image_store(client: TestClient) -> None:
    assert client.get("/api/v1/info").json()["source_deploy"] is False


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (_parts({"name": "f"}, source=None), "needs a 'function' part"),
        (_parts({"name": "f"}, extra=True), "unexpected multipart part 'other'"),
        (_parts({"name": "f"}), "no image store"),
        ({"content": b"x", "headers": {"content-type": "multipart/form-data"}}, "malformed multipart"),
    ],
)
def test_bad_or_unsupported_multipart_is_a_json_400(client: TestClient, kwargs: dict, needle: str) -> None:  # type: ignore[type-arg]
    r = client.post("/api/v1/functions", **kwargs)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_input" and needle in r.json()["message"]
    assert client.get("/api/v1/functions/f").status_code == 404


def test_function_part_must_be_json(client: TestClient) -> None:
    r = client.post(
        "/api/v1/functions",
        files={
            "function": (None, b"{nope", "application/json"),
            "source": ("s.tgz", b"x", "application/gzip"),
        },
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"]
