"""Source-directory deploys: the reproducible tarball and the multipart request the SDK sends."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import httpx
import pytest

from faasd.sdk import Client
from faasd.sdk._api import function_spec, pack_source

pytestmark = pytest.mark.unit


def _tree(root: Path) -> None:
    (root / "pkg").mkdir(parents=True)
    (root / "handler.py").write_text("def handle(e, c):\n    return 'x'\n")
    (root / "pkg" / "util.py").write_text("X = 1\n")
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "util.cpython-311.pyc").write_bytes(b"junk")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref")
    (root / "link").symlink_to("handler.py")


def test_pack_source_is_reproducible_and_skips_caches(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _tree(a)
    _tree(b)
    os.utime(b / "handler.py", (1, 1))
    assert pack_source(a) == pack_source(b)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(pack_source(a)))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["handler.py", "link", "pkg", "pkg/util.py"]
        assert members["link"].issym() and members["link"].linkname == "handler.py"
        assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in members.values())
        handler = tar.extractfile("handler.py")
        assert handler is not None and handler.read().startswith(b"def handle")


def test_pack_source_needs_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        pack_source(tmp_path / "missing")


def test_deploy_with_source_sends_multipart(tmp_path: Path) -> None:
    _tree(tmp_path)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return httpx.Response(201, json={"name": "fn", "image": "faasd-fn/fn:abc"})

    client = Client("http://faasd.test", transport=httpx.MockTransport(handler))
    client.deploy("fn", source=tmp_path, runtime="node", handler="index.handler")
    request = seen[0]
    boundary = request.headers["content-type"].split("boundary=")[1]
    parts = request.content.split(b"--" + boundary.encode())
    function_part = next(p for p in parts if b'name="function"' in p)
    spec = json.loads(function_part.split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n"))
    assert spec["image"] == "faasd/node:latest" and spec["runtime"] == "node"
    source_part = next(p for p in parts if b'name="source"' in p)
    assert b"application/gzip" in source_part
    assert source_part.split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n") == pack_source(tmp_path)


def test_function_spec_merges_over_a_base() -> None:
    base = function_spec(
        "f", "img:1", {"memory_mb": 128, "min_replicas": 1, "max_replicas": 4, "env": {"A": "1"}}
    )
    merged = function_spec("f", None, {"max_replicas": 2, "timeout_s": 5}, base)
    assert merged.image == "img:1" and merged.env == {"A": "1"}
    assert merged.limits is not None and (merged.limits.memory_mb, merged.limits.timeout_s) == (128, 5)
    assert merged.scale is not None and (merged.scale.min, merged.scale.max) == (1, 2)
    with pytest.raises(ValueError, match="image is required"):
        function_spec("f", None, {})
    with pytest.raises(ValueError, match="unknown deploy option"):
        function_spec("f", "img:1", {"memroy_mb": 128})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(ValueError, match=r"Expected `int \| null`, got `str` - at `\$.port`"):
        function_spec("f", "img:1", {"port": "web"})  # type: ignore[typeddict-item]


def test_api_objects_serialise_without_none_and_copy_their_spec() -> None:
    from faasd.sdk.models import Function, MergeResult, convert, to_builtins

    fn = convert(
        {
            "name": "f",
            "image": "i",
            "limits": {"memory_mb": 64},
            "env": {"A": "1"},
            "created_at": "2026-12-07T10:00:00Z",
        },
        Function,
    )
    assert fn.to_json() == {
        "name": "f",
        "image": "i",
        "env": {"A": "1"},
        "secrets": [],
        "limits": {"memory_mb": 64},
        "labels": {},
        "annotations": {},
        "created_at": "2026-12-07T10:00:00Z",
    }
    assert to_builtins(fn)["limits"] == {
        "memory_mb": 64,
        "cpu_cores": None,
        "pids": None,
        "timeout_s": None,
        "disk_mb": None,
    }
    spec = fn.spec()
    spec.env["B"] = "2"
    assert fn.env == {"A": "1"} and type(spec).__name__ == "FunctionSpec" and not hasattr(spec, "created_at")
    merged = convert(
        {
            "snapshot": {"id": "s"},
            "report": {"strategy": "ours", "conflicts": [{"path": "a", "kind": "both"}]},
        },
        MergeResult,
    )
    assert merged.to_json()["report"]["conflicts"] == [
        {"path": "a", "kind": "both", "sides": {}, "resolution": "", "kept_copies": {}}
    ]
    assert "parent" not in merged.to_json()["snapshot"]
