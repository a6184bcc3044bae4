"""Source-directory deploys through the real daemon: multipart create/update, and hostile archives."""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from faasd.config import Settings
from faasd.sdk import Client, NotFound
from faasd.testing.server import FaasdServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HANDLER = """
import os


def handle(event, context):
    return "{version} extra=" + str(os.path.exists("/function/extra.txt"))
"""


@pytest.fixture
def name() -> str:
    return "src-" + uuid.uuid4().hex[:10]


@pytest.fixture
def api(faasd_server: FaasdServer) -> httpx.Client:
    headers = {"Authorization": f"Bearer {faasd_server.api_key}"} if faasd_server.api_key else {}
    with httpx.Client(base_url=faasd_server.url, headers=headers, timeout=180) as c:
        yield c  # type: ignore[misc]


def _source_refs(server: FaasdServer, name: str) -> list[str]:
    from faasd.images.store import ImageStore

    assert server.data_dir is not None
    store = ImageStore(Settings(data_dir=server.data_dir))
    return [r for img in store.list() for r in img.refs if r.startswith(f"faasd-fn/{name}:")]


def _leftover_tmp(server: FaasdServer) -> list[str]:
    assert server.data_dir is not None
    tmp = server.data_dir / "tmp" / "source-deploy"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def _tgz(add: Callable[[tarfile.TarFile], None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        add(tar)
    return buf.getvalue()


def _file(tar: tarfile.TarFile, arcname: str, data: bytes) -> None:
    info = tarfile.TarInfo(arcname)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _multipart(function: dict, source: bytes) -> dict:  # type: ignore[type-arg]
    return {
        "files": {
            "function": (None, json.dumps(function).encode(), "application/json"),
            "source": ("source.tar.gz", source, "application/gzip"),
        }
    }


def test_source_deploy_create_invoke_and_update(
    faasd_server: FaasdServer, faasd_platform: Client, api: httpx.Client, tmp_path: Path, name: str
) -> None:
    assert faasd_platform.info().source_deploy
    src = tmp_path / "v1"
    src.mkdir()
    (src / "handler.py").write_text(HANDLER.format(version="v1"))
    (src / "extra.txt").write_text("only in v1")
    try:
        fn = faasd_platform.deploy(name, source=src, runtime="python", handler="handler.handle")
        assert fn.image.startswith(f"faasd-fn/{name}:"), fn.image
        assert faasd_platform.invoke(name).text == "v1 extra=True"
        # an update naming the previous source build as image replaces its code (no stacking)
        v2 = _tgz(lambda t: _file(t, "handler.py", HANDLER.format(version="v2").encode()))
        spec = {"name": name, "image": fn.image, "runtime": "python", "handler": "handler.handle"}
        r = api.put(f"/api/v1/functions/{name}", **_multipart(spec, v2))
        assert r.status_code == 200, r.text
        assert r.json()["image"].startswith(f"faasd-fn/{name}:") and r.json()["image"] != fn.image
        assert faasd_platform.invoke(name).text == "v2 extra=False"
        # the v1 build is no longer used by anything: its ref is gone, only v2's is left
        assert _source_refs(faasd_server, name) == [r.json()["image"]]
        # creating it again is a conflict that builds nothing
        before = _source_refs(faasd_server, name)
        r = api.post("/api/v1/functions", **_multipart({"name": name, "runtime": "python"}, v2 + b""))
        assert r.status_code == 409, r.text
        assert _source_refs(faasd_server, name) == before
    finally:
        faasd_platform.delete_function(name)
    assert _leftover_tmp(faasd_server) == []
    assert _source_refs(faasd_server, name) == []  # deleting the function removes its source build


def test_source_image_kept_while_a_snapshot_uses_it(
    faasd_server: FaasdServer, faasd_platform: Client, tmp_path: Path, name: str
) -> None:
    src = tmp_path / "v1"
    src.mkdir()
    (src / "handler.py").write_text(HANDLER.format(version="v1"))
    fn = faasd_platform.deploy(name, source=src, runtime="python", handler="handler.handle")
    snap = None
    try:
        assert faasd_platform.invoke(name).text == "v1 extra=False"
        snap = faasd_platform.snapshot(function=name)
        faasd_platform.delete_function(name)
        # the snapshot's filesystem is built on the image's layers: the image stays
        assert _source_refs(faasd_server, name) == [fn.image]
    finally:
        with contextlib.suppress(NotFound):
            faasd_platform.delete_function(name)
        if snap is not None:
            faasd_platform.delete_snapshot(snap.id)


def _dotdot(tar: tarfile.TarFile) -> None:
    _file(tar, "handler.py", b"def handle(e, c): return 1\n")
    _file(tar, "../escape.txt", b"x")


def _symlink_escape(outside: Path) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        link = tarfile.TarInfo("out")
        link.type = tarfile.SYMTYPE
        link.linkname = str(outside)
        tar.addfile(link)
        _file(tar, "out/pwned.txt", b"written through a symlink")

    return add


def _relative_symlink_escape(tar: tarfile.TarFile) -> None:
    link = tarfile.TarInfo("up")
    link.type = tarfile.SYMTYPE
    link.linkname = "../../../../../../../../tmp"
    tar.addfile(link)
    _file(tar, "up/pwned-rel.txt", b"x")


def _hardlink_escape(tar: tarfile.TarFile) -> None:
    hl = tarfile.TarInfo("passwd")
    hl.type = tarfile.LNKTYPE
    hl.linkname = "/etc/passwd"
    tar.addfile(hl)


@pytest.mark.parametrize("kind", ["dotdot", "symlink", "relative-symlink", "hardlink", "not-a-tar"])
def test_hostile_source_archive_is_rejected_and_leaves_nothing(
    faasd_server: FaasdServer, api: httpx.Client, tmp_path: Path, name: str, kind: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = {
        "dotdot": lambda: _tgz(_dotdot),
        "symlink": lambda: _tgz(_symlink_escape(outside)),
        "relative-symlink": lambda: _tgz(_relative_symlink_escape),
        "hardlink": lambda: _tgz(_hardlink_escape),
        "not-a-tar": lambda: b"\x1f\x8b garbage",
    }[kind]()
    r = api.post("/api/v1/functions", **_multipart({"name": name, "runtime": "python"}, archive))
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_input"
    assert api.get(f"/api/v1/functions/{name}").status_code == 404
    assert _source_refs(faasd_server, name) == []
    assert _leftover_tmp(faasd_server) == []
    assert list(outside.iterdir()) == []
    assert not Path("/tmp/pwned-rel.txt").exists()


def test_source_part_is_bounded_by_max_payload(
    faasd_server: FaasdServer, faasd_platform: Client, api: httpx.Client, name: str
) -> None:
    limit = faasd_platform.info().max_payload_bytes
    assert limit is not None
    r = api.post("/api/v1/functions", **_multipart({"name": name, "runtime": "python"}, b"\0" * (limit + 1)))
    assert r.status_code == 413, r.text
    assert _source_refs(faasd_server, name) == []
