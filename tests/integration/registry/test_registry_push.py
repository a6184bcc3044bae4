"""Pushes to a real docker-registry: monolithic and chunked uploads, mounts, exists checks, round trips."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from faasd.config import Settings
from faasd.errors import NotFoundError, RegistryAuthError
from faasd.images import ImageStore
from faasd.images.registry import CredentialStore, Puller, Pusher, RegistryClient, RegistryOptions
from fixtures import images as tb
from fixtures.registry import PASSWORD, USER, Registry, busybox_image, docker_archive, docker_config

pytestmark = pytest.mark.integration


def _opts(paths: list[Path] | None = None) -> RegistryOptions:
    return RegistryOptions(CredentialStore(paths or []), {})


def _local_image(store: ImageStore, tmp_path: Path, ref: str, marker: str) -> tb.BuiltImage:
    img = busybox_image(marker, [tb.F("etc/second", f"{marker}\n")])
    store.import_archive(docker_archive(img, tmp_path / "local.tar"), ref=ref)
    return img


def _fresh_store(tmp_path: Path, name: str) -> ImageStore:
    return ImageStore(Settings(data_dir=tmp_path / name / "data", run_dir=tmp_path / name / "run"))


async def test_push_then_pull_round_trip(registry: Registry, tmp_path: Path, unique_id: str) -> None:
    store = _fresh_store(tmp_path, "a")
    ref = f"{registry.host}/pushed/{unique_id}:v1"
    img = _local_image(store, tmp_path, ref, f"pushed {unique_id}")
    local = store.get(ref)
    events = []
    result = await Pusher(store, _opts()).push(ref, progress=events.append)
    assert result.digest == local.manifest_digest
    assert sorted(result.uploaded) == sorted({local.id, *(x.digest for x in local.layers)})
    assert any(e.phase == "upload" and e.done == e.total for e in events)
    # skopeo (another client) reads what we pushed
    proc = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True,
        check=True,
    )
    assert json.loads(proc.stdout)["config"]["digest"] == local.id
    # and a fresh store pulls the same image back
    other = _fresh_store(tmp_path, "b")
    pulled = await Puller(other, _opts()).pull(ref)
    assert pulled.id == local.id and pulled.manifest_digest == local.manifest_digest
    assert [x.diff_id for x in pulled.layers] == img.diff_ids
    # pushing again finds every blob there already
    again = await Pusher(store, _opts()).push(ref)
    assert again.uploaded == [] and sorted(again.existing) == sorted(result.uploaded)


async def test_chunked_upload_and_cross_repository_mount(
    registry: Registry, tmp_path: Path, unique_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    methods: list[str] = []
    real_request = RegistryClient._request

    async def recording(self: RegistryClient, method: str, url: Any, what: str, **kw: Any) -> Any:
        methods.append(method)
        return await real_request(self, method, url, what, **kw)

    monkeypatch.setattr(RegistryClient, "_request", recording)
    store = _fresh_store(tmp_path, "a")
    first = f"{registry.host}/chunked/{unique_id}:v1"
    _local_image(store, tmp_path, first, f"chunked {unique_id}")
    local = store.get(first)
    result = await Pusher(store, _opts(), chunk_size=64 * 1024).push(first)
    assert len(result.uploaded) == 3  # config + 2 layers, the big one in many PATCHes
    big = max(x.size for x in local.layers)
    assert methods.count("PATCH") >= big // (64 * 1024) and methods.count("PUT") == 4  # 3 blobs + manifest
    methods.clear()
    store.tag(first, f"{registry.host}/mounted/{unique_id}:v2")
    second = await Pusher(store, _opts()).push(f"{registry.host}/mounted/{unique_id}:v2")
    assert sorted(second.mounted) == sorted({local.id, *(x.digest for x in local.layers)})
    assert second.uploaded == [] and "PATCH" not in methods
    for ref in (first, f"{registry.host}/mounted/{unique_id}:v2"):
        pulled = await Puller(_fresh_store(tmp_path, ref.rsplit("/", 1)[1]), _opts()).pull(ref)
        assert pulled.id == local.id


async def test_push_from_another_local_name_and_errors(
    auth_registry: Registry, tmp_path: Path, unique_id: str
) -> None:
    store = _fresh_store(tmp_path, "a")
    _local_image(store, tmp_path, f"local/{unique_id}:1", f"auth push {unique_id}")
    target = f"{auth_registry.host}/team/{unique_id}:1"
    with pytest.raises(NotFoundError, match="not in the local image store"):
        await Pusher(store, _opts()).push(target)
    wrong = docker_config(tmp_path / "wrong.json", auth_registry.host, USER, "nope")
    with pytest.raises(RegistryAuthError, match="rejected the credentials"):
        await Pusher(store, _opts([wrong])).push(target, source=f"local/{unique_id}:1")
    good = docker_config(tmp_path / "good.json", auth_registry.host, USER, PASSWORD)
    result = await Pusher(store, _opts([good])).push(target, source=f"local/{unique_id}:1")
    pulled = await Puller(_fresh_store(tmp_path, "b"), _opts([good])).pull(target)
    assert pulled.manifest_digest == result.digest == store.get(f"local/{unique_id}:1").manifest_digest
