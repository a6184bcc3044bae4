"""Pulls from a real Debian docker-registry on loopback, filled with skopeo from locally built archives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.content import digest as dg
from faasd.errors import DigestMismatchError, NotFoundError, RegistryAuthError, RegistryError
from faasd.images import ImageStore
from faasd.images import models as m
from faasd.images.models import Image
from faasd.images.registry import CredentialStore, Puller, RegistryOptions
from faasd.platform.exec_ephemeral import ExecuteRequest, ExecuteService
from faasd.platform.pulls import ImageEnsurer
from faasd.runtime.sandbox import SandboxManager
from fixtures import images as tb
from fixtures.registry import (
    PASSWORD,
    USER,
    CuttingProxy,
    Registry,
    busybox_image,
    docker_archive,
    docker_config,
)

pytestmark = pytest.mark.integration


def _opts(cred_paths: list[Path] | None = None, mirrors: dict[str, str] | None = None) -> RegistryOptions:
    return RegistryOptions(CredentialStore(cred_paths or []), mirrors or {})


def _marker(store: ImageStore, ref: str) -> str:
    for d in reversed(store.layer_dirs(store.get(ref))):
        if (d / "etc/marker").exists():
            return (d / "etc/marker").read_text()
    raise AssertionError("no /etc/marker in the image")


@pytest.fixture
def store(settings: Settings) -> ImageStore:
    return ImageStore(settings)


def _push_archive(reg: Registry, tmp_path: Path, repo_tag: str, marker: str, *extra: str) -> tb.BuiltImage:
    img = busybox_image(marker, [tb.F("etc/second", f"layer two of {repo_tag}\n")])  # no blob reuse
    reg.skopeo_copy(f"docker-archive:{docker_archive(img, tmp_path / f'{marker}.tar')}", repo_tag, *extra)
    return img


async def test_pull_resolves_docker_names_and_runs_a_sandbox_on_demand(
    registry: Registry,
    settings: Settings,
    store: ImageStore,
    manager: SandboxManager,
    tmp_path: Path,
    unique_id: str,
) -> None:
    # docker.io/library/<name> is what 'name' means; the mirror setting sends docker.io to our registry
    _push_archive(registry, tmp_path, f"library/{unique_id}:latest", f"hello from {unique_id}")
    settings.registry_mirrors = {"docker.io": registry.host}
    ensurer = ImageEnsurer(settings, store)

    async def resolve(ref: str) -> Image:  # what Platform.resolve_image does: pull when missing, then get
        await ensurer.ensure(ref)
        return store.get(ref)

    execute = ExecuteService(store, manager, resolve_image=resolve)
    assert not store.exists(unique_id)
    result = await execute.execute(ExecuteRequest(image=unique_id, command="cat /etc/marker; echo; echo ok"))
    assert result["exit_code"] == 0, result
    assert result["stdout"] == f"hello from {unique_id}\nok\n"
    image = store.get(f"{unique_id}:latest")  # stored under Docker's familiar name
    assert image.refs == [f"{unique_id}:latest"]
    assert store.get(f"docker.io/library/{unique_id}:latest").id == image.id
    # present now: a second execute does not pull (the registry may even be gone)
    settings.registry_mirrors = {"docker.io": "127.0.0.1:1"}
    again = await execute.execute(
        ExecuteRequest(image=f"{unique_id}:latest", command=["/bin/cat", "/etc/marker"])
    )
    assert again["stdout"] == f"hello from {unique_id}"


async def test_pull_by_host_keeps_layers_and_digests(
    registry: Registry, store: ImageStore, tmp_path: Path, unique_id: str
) -> None:
    img = _push_archive(registry, tmp_path, f"team/{unique_id}:v1", "by host")
    ref = f"{registry.host}/team/{unique_id}:v1"
    events = []
    image = await Puller(store, _opts()).pull(ref, events.append)
    assert image.refs == [ref]
    assert [x.diff_id for x in image.layers] == img.diff_ids  # skopeo compressed them; content is the same
    assert all(x.media_type.endswith("gzip") for x in image.layers)
    manifest, _ = registry.manifest(f"team/{unique_id}", "v1", m.MT_DOCKER_MANIFEST)
    assert image.manifest_digest == dg.sha256_bytes(manifest)
    assert _marker(store, ref) == "by host"
    downloads = [e for e in events if e.phase == "download"]
    assert {e.digest for e in downloads} == {image.id, *(x.digest for x in image.layers)}
    last = {e.digest: e for e in downloads}
    assert all(e.done == e.total for e in last.values())
    assert tb.leftovers(store)["ingest"] == []
    # pinned by digest: the same image, found by that digest (no name is added)
    other = ImageStore(Settings(data_dir=tmp_path / "d2", run_dir=tmp_path / "r2"))
    pinned = await Puller(other, _opts()).pull(f"{registry.host}/team/{unique_id}@{image.manifest_digest}")
    assert pinned.manifest_digest == image.manifest_digest and pinned.refs == []
    assert other.get(image.manifest_digest).id == image.id
    # pulling again is a no-op download-wise
    events.clear()
    await Puller(store, _opts()).pull(ref, events.append)
    assert all("already present" in e.description for e in events if e.phase == "download")


async def test_zstd_layers(registry: Registry, store: ImageStore, tmp_path: Path, unique_id: str) -> None:
    img = _push_archive(
        registry,
        tmp_path,
        f"z/{unique_id}:zstd",
        "zstd layers",
        "--dest-compress",
        "--dest-compress-format",
        "zstd",
        "--format",
        "oci",
    )
    image = await Puller(store, _opts()).pull(f"{registry.host}/z/{unique_id}:zstd")
    assert all(x.media_type == m.MT_OCI_LAYER_ZSTD for x in image.layers), image.layers
    assert [x.diff_id for x in image.layers] == img.diff_ids
    assert _marker(store, f"{registry.host}/z/{unique_id}:zstd") == "zstd layers"


async def test_manifest_list_resolves_to_linux_amd64(
    registry: Registry, store: ImageStore, tmp_path: Path, unique_id: str
) -> None:
    layout = tmp_path / "multi"
    descs = []
    for arch in ("arm64", "amd64", "s390x"):
        img = busybox_image(f"arch {arch}")
        cfg = json.loads(img.config)
        cfg["architecture"] = arch
        img.config = json.dumps(cfg).encode()
        man = json.loads(img.manifest)
        man["config"] = {"mediaType": m.MT_OCI_CONFIG, "digest": tb.sha(img.config), "size": len(img.config)}
        img.manifest = json.dumps(man).encode()
        tb.write_oci_layout(img, layout)
        descs.append(
            {
                "mediaType": m.MT_OCI_MANIFEST,
                "digest": img.manifest_digest,
                "size": len(img.manifest),
                "platform": {"os": "linux", "architecture": arch},
            }
        )
    index = {"schemaVersion": 2, "mediaType": m.MT_OCI_INDEX, "manifests": descs}
    (layout / "blobs/sha256" / tb.sha(json.dumps(index).encode())[7:]).write_bytes(json.dumps(index).encode())
    (layout / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": m.MT_OCI_INDEX,
                        "digest": tb.sha(json.dumps(index).encode()),
                        "size": len(json.dumps(index).encode()),
                        "annotations": {m.ANNOTATION_REF_NAME: "multi"},
                    }
                ],
            }
        )
    )
    registry.skopeo_copy(f"oci:{layout}:multi", f"multi/{unique_id}:v1", "--all")
    data, ctype = registry.manifest(f"multi/{unique_id}", "v1", m.MT_OCI_INDEX)
    assert ctype == m.MT_OCI_INDEX and len(json.loads(data)["manifests"]) == 3
    ref = f"{registry.host}/multi/{unique_id}:v1"
    image = await Puller(store, _opts()).pull(ref)
    assert image.architecture == "amd64"
    assert _marker(store, ref) == "arch amd64"
    # only the amd64 image's blobs were fetched
    assert sorted(tb.leftovers(store)["blobs"]) == sorted(
        {image.manifest_digest, image.id, *(x.digest for x in image.layers)}
    )

    # the same as a Docker manifest list (skopeo converts it)
    registry.skopeo_copy(f"oci:{layout}:multi", f"multi/{unique_id}:docker", "--all", "--format", "v2s2")
    data, ctype = registry.manifest(f"multi/{unique_id}", "docker", m.MT_DOCKER_LIST)
    assert ctype == m.MT_DOCKER_LIST, ctype
    other = ImageStore(Settings(data_dir=tmp_path / "d2", run_dir=tmp_path / "r2"))
    docker_ref = f"{registry.host}/multi/{unique_id}:docker"
    from_list = await Puller(other, _opts()).pull(docker_ref)
    assert from_list.architecture == "amd64" and _marker(other, docker_ref) == "arch amd64"

    # an index without linux/amd64 says which platforms it has
    only_arm = {"schemaVersion": 2, "mediaType": m.MT_OCI_INDEX, "manifests": [descs[0], descs[2]]}
    raw = json.dumps(only_arm).encode()
    (layout / "blobs/sha256" / tb.sha(raw)[7:]).write_bytes(raw)
    (layout / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": m.MT_OCI_INDEX,
                        "digest": tb.sha(raw),
                        "size": len(raw),
                        "annotations": {m.ANNOTATION_REF_NAME: "arm"},
                    }
                ],
            }
        )
    )
    registry.skopeo_copy(f"oci:{layout}:arm", f"multi/{unique_id}:arm", "--all")
    with pytest.raises(Exception) as err:
        await Puller(store, _opts()).pull(f"{registry.host}/multi/{unique_id}:arm")
    assert "no linux/amd64 variant" in str(err.value) and "linux/arm64" in str(err.value)


async def test_corrupt_blob_is_a_digest_error_and_nothing_is_left(
    registry: Registry, store: ImageStore, tmp_path: Path, unique_id: str
) -> None:
    _push_archive(registry, tmp_path, f"bad/{unique_id}:v1", "to be corrupted")
    data, _ = registry.manifest(f"bad/{unique_id}", "v1", m.MT_DOCKER_MANIFEST)
    big = max(json.loads(data)["layers"], key=lambda x: x["size"])
    blob = registry.blob_file(big["digest"])
    raw = bytearray(blob.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, different bytes
    blob.write_bytes(bytes(raw))
    before = tb.leftovers(store)
    with pytest.raises(DigestMismatchError) as err:
        await Puller(store, _opts()).pull(f"{registry.host}/bad/{unique_id}:v1")
    assert big["digest"] in err.value.message and registry.host in err.value.message
    assert f"bad/{unique_id}" in err.value.message
    assert tb.leftovers(store) == before  # no blob, layer, ref or ingest file


async def test_unknown_image_and_unreachable_registry(
    registry: Registry, store: ImageStore, settings: Settings, unique_id: str
) -> None:
    with pytest.raises(NotFoundError) as err:
        await Puller(store, _opts()).pull(f"{registry.host}/nope/{unique_id}:v1")
    assert f"{registry.host}/nope/{unique_id}:v1" in err.value.message and "not found" in err.value.message
    dead = "127.0.0.1:1"
    with pytest.raises(RegistryError) as err2:
        await Puller(store, _opts()).pull(f"{dead}/x/{unique_id}:v1")
    assert dead in err2.value.message and f"x/{unique_id}" in err2.value.message
    assert "faas image import FILE" in err2.value.message
    # the platform seam: a clear error naming the image, the offline way in it
    settings.registry_mirrors = {"docker.io": dead}
    with pytest.raises(NotFoundError) as err3:
        await ImageEnsurer(settings, store).ensure(f"{unique_id}:latest")
    assert f"{unique_id}:latest" in err3.value.message and "faas image import FILE" in err3.value.message
    settings.pull_missing_images = False
    with pytest.raises(NotFoundError, match="pulling missing images is off"):
        await ImageEnsurer(settings, store).ensure(f"{unique_id}:latest")
    assert tb.leftovers(store)["blobs"] == []


async def test_basic_auth_with_docker_config(
    auth_registry: Registry,
    store: ImageStore,
    tmp_path: Path,
    unique_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _push_archive(auth_registry, tmp_path, f"private/{unique_id}:v1", "secret image")
    ref = f"{auth_registry.host}/private/{unique_id}:v1"
    with pytest.raises(RegistryAuthError, match="needs credentials"):
        await Puller(store, _opts()).pull(ref)
    wrong = docker_config(tmp_path / "wrong.json", auth_registry.host, USER, "not-the-password")
    with pytest.raises(RegistryAuthError) as err:
        await Puller(store, _opts([wrong])).pull(ref)
    assert "rejected the credentials" in err.value.message and auth_registry.host in err.value.message
    assert "not-the-password" not in err.value.message
    assert tb.leftovers(store)["blobs"] == []
    # $DOCKER_CONFIG/config.json, as Docker reads it
    cfg_dir = tmp_path / "dockercfg"
    cfg_dir.mkdir()
    docker_config(cfg_dir / "config.json", f"http://{auth_registry.host}", USER, PASSWORD)
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg_dir))
    image = await Puller(store, _opts([wrong.with_name("absent.json"), cfg_dir / "config.json"])).pull(ref)
    assert _marker(store, ref) == "secret image" and image.refs == [ref]


async def test_interrupted_download_resumes_with_range(
    registry: Registry, store: ImageStore, tmp_path: Path, unique_id: str
) -> None:
    _push_archive(registry, tmp_path, f"resume/{unique_id}:v1", "resumed")
    proxy = CuttingProxy(registry.host, cut_after=200_000, cuts_per_blob=1).start()
    try:
        ref = f"{proxy.host}/resume/{unique_id}:v1"
        # no retries: the pull fails, the partial blob waits in the content store's ingest
        with pytest.raises(RegistryError, match="pull again to continue"):
            await Puller(store, _opts(), retries=0).pull(ref)
        partial = [p for p in store.content.ingest_dir.iterdir() if p.name.endswith(".partial")]
        # downloads run concurrently: another blob's download may have been opened (0 bytes) when the cut
        # ended the pull; the cut blob's partial holds exactly what arrived
        assert [p.stat().st_size for p in partial if p.stat().st_size] == [200_000]
        assert tb.leftovers(store)["images"] == []
        proxy.requests.clear()
        image = await Puller(store, _opts(), retries=0).pull(ref)
        ranges = [rng for line, rng in proxy.requests if "/blobs/" in line and rng]
        assert ranges == ["bytes=200000-"], proxy.requests
        assert _marker(store, ref) == "resumed" and image.refs == [ref]
        assert tb.leftovers(store)["ingest"] == []

        # within one pull: cut again (new blobs of a fresh store), retried with Range transparently
        other = ImageStore(Settings(data_dir=tmp_path / "d2", run_dir=tmp_path / "r2"))
        proxy._cut.clear()
        proxy.requests.clear()
        again = await Puller(other, _opts(), retries=2, retry_delay_s=0.01).pull(ref)
        assert again.id == image.id
        assert [rng for line, rng in proxy.requests if "/blobs/" in line and rng] == ["bytes=200000-"]
    finally:
        proxy.stop()


async def test_bearer_token_auth(
    token_registry: Registry, store: ImageStore, tmp_path: Path, unique_id: str
) -> None:
    _push_archive(token_registry, tmp_path, f"tok/{unique_id}:v1", "behind a token server")
    ref = f"{token_registry.host}/tok/{unique_id}:v1"
    server = token_registry.token_server
    assert server is not None
    refused = server.refused
    with pytest.raises(RegistryAuthError) as err:  # anonymous: the token server refuses
        await Puller(store, _opts()).pull(ref)
    assert token_registry.host in err.value.message and "anonymous" in err.value.message
    wrong = docker_config(tmp_path / "wrong.json", token_registry.host, USER, "wrong")
    with pytest.raises(RegistryAuthError, match=f"refused user '{USER}'"):
        await Puller(store, _opts([wrong])).pull(ref)
    assert server.refused == refused + 2
    good = docker_config(tmp_path / "good.json", token_registry.host, USER, PASSWORD)
    server.scopes.clear()
    image = await Puller(store, _opts([good])).pull(ref)
    assert f"repository:tok/{unique_id}:pull" in server.scopes
    assert _marker(store, ref) == "behind a token server" and image.refs == [ref]
