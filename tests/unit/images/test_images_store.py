"""ImageStore: import formats, lookup, refs, leases, remove, gc, writer, export."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.errors import ConflictError, InvalidInputError, NotFoundError
from faasd.images import ImageConfig, ImageStore, ProgressEvent, apply_layers, normalize_ref
from fixtures import images as tb
from fixtures.images import D, F, L

pytestmark = [pytest.mark.unit, pytest.mark.skipif(os.geteuid() != 0, reason="overlay layer dirs need root")]


@pytest.fixture
def store(settings: Settings) -> ImageStore:
    return ImageStore(settings)


def _merged(store: ImageStore, image_ref: str, dest: Path) -> dict[str, str]:
    from faasd.images import flatten_layer_dirs

    flatten_layer_dirs(store.layer_dirs(store.get(image_ref)), dest)
    out = {}
    for dirpath, dirnames, filenames in os.walk(dest):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            out[str(p.relative_to(dest))] = (
                "dir"
                if p.is_dir() and not p.is_symlink()
                else ("-> " + os.readlink(p) if p.is_symlink() else p.read_text(errors="replace"))
            )
    return out


EXPECTED = {
    "etc",
    "etc/keep",
    "etc/added",
    "etc/gone",
    "data",
    "data/new",
    "olddir",
    "olddir/y",
    "lib",
    "lib/libx.so",
    "bin",
    "bin/tool",
    "bin/tool2",
}


@pytest.mark.parametrize(
    "fmt", ["docker", "oci-layout", "oci-archive", "oci-archive-zstd", "docker-uncompressed"]
)
def test_import_formats(store: ImageStore, tmp_path: Path, fmt: str) -> None:
    comp = "zstd" if "zstd" in fmt else ("none" if "uncompressed" in fmt else "gzip")
    img = tb.three_layer_image(comp)
    path = {
        "docker": lambda: tb.write_docker_archive(
            img, tmp_path / "d.tar", tags=["test/three:1", "test/three:latest"]
        ),
        "docker-uncompressed": lambda: tb.write_docker_archive(
            img, tmp_path / "d.tar", tags=["test/three:1"]
        ),
        "oci-layout": lambda: tb.write_oci_layout(img, tmp_path / "layout", ref_name="test/three:1"),
        "oci-archive": lambda: tb.write_oci_archive(img, tmp_path / "o.tar", ref_name="test/three:1"),
        "oci-archive-zstd": lambda: tb.write_oci_archive(img, tmp_path / "o.tar", ref_name="test/three:1"),
    }[fmt]()
    events: list[ProgressEvent] = []
    image = store.import_archive(path, progress=events.append)
    assert image.id == img.config_digest
    assert "test/three:1" in image.refs
    assert len(image.layers) == 3 and [x.diff_id for x in image.layers] == img.diff_ids
    cfg = image.config
    assert cfg.entrypoint == ["/bin/tool"] and cfg.cmd == ["--help"] and cfg.env == ["A=1", "PATH=/bin"]
    assert cfg.working_dir == "/data" and cfg.user == "1000:1000" and cfg.exposed_ports == ["8080/tcp"]
    assert cfg.labels == {"org.example": "yes"}
    assert set(_merged(store, "test/three:1", tmp_path / "merged")) == EXPECTED
    assert events and events[-1].phase == "done"
    assert events[-1].bytes_done == events[-1].bytes_total
    for d in store.layer_dirs(image):
        assert (d.parent / ".complete").is_file()
        assert d.parent.parent == store.settings.layers_dir


def test_legacy_docker_archive(store: ImageStore, tmp_path: Path) -> None:
    path = tb.write_legacy_docker_archive(
        [[D("a"), F("a/x", "1")], [F("a/.wh.x"), F("b", "2")]],
        tmp_path / "l.tar",
        config={"Cmd": "/bin/echo hi", "Env": ["X=1"]},
    )
    image = store.import_archive(path)
    assert image.refs == ["legacy/img:v1"]
    assert image.config.cmd == ["/bin/echo hi"] and image.config.env == ["X=1"]
    assert _merged(store, "legacy/img:v1", tmp_path / "m") == {"a": "dir", "b": "2"}


def test_docker25_style_archive(store: ImageStore, tmp_path: Path) -> None:
    """Docker >= 25 writes an OCI layout plus manifest.json in the same tar; tags come from manifest.json."""
    img = tb.build_image([[F("hello", "world")]])
    path = tb.write_oci_archive(img, tmp_path / "x.tar", ref_name=None)
    import io
    import tarfile

    manifest = [
        {
            "Config": f"blobs/sha256/{img.config_digest[7:]}",
            "RepoTags": ["docker25/img:2"],
            "Layers": [f"blobs/sha256/{tb.sha(img.layers[0])[7:]}"],
        }
    ]
    with tarfile.open(path, "a") as tf:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    assert store.import_archive(path).refs == ["docker25/img:2"]


def test_nested_index_and_platform_selection(store: ImageStore, tmp_path: Path) -> None:
    from faasd.images.archive import host_arch

    img = tb.build_image([[F("mine", "1")]])
    other = tb.build_image([[F("other", "2")]])
    layout = tb.write_oci_layout(img, tmp_path / "oci")
    for blob in [*other.layers, other.config, other.manifest]:
        (layout / "blobs/sha256" / tb.sha(blob)[7:]).write_bytes(blob)
    sub = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": other.manifest_digest,
                "size": len(other.manifest),
                "platform": {"os": "linux", "architecture": "s390x"},
            },
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": img.manifest_digest,
                "size": len(img.manifest),
                "platform": {"os": "linux", "architecture": host_arch()},
            },
        ],
    }
    raw = json.dumps(sub).encode()
    (layout / "blobs/sha256" / tb.sha(raw)[7:]).write_bytes(raw)
    (layout / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.index.v1+json",
                        "digest": tb.sha(raw),
                        "size": len(raw),
                        "annotations": {"io.containerd.image.name": "multi/arch:1"},
                    }
                ],
            }
        )
    )
    image = store.import_archive(layout)
    assert image.id == img.config_digest and image.refs == ["multi/arch:1"]


def test_lookup_by_id_short_id_manifest(store: ImageStore, tmp_path: Path) -> None:
    img = tb.build_image([[F("a", "1")]])
    image = store.import_archive(tb.write_oci_layout(img, tmp_path / "o"), ref="look/up")
    assert image.refs == ["look/up:latest"]
    for key in ("look/up", "look/up:latest", image.id, image.short_id, image.id[7:15], image.manifest_digest):
        assert store.get(key).id == image.id
    with pytest.raises(NotFoundError):
        store.get("nope:1")
    assert store.list() == [store.get(image.id)]


def test_normalize_ref() -> None:
    assert normalize_ref("python") == "python:latest"
    assert normalize_ref("localhost:5000/a/b") == "localhost:5000/a/b:latest"
    assert normalize_ref("ghcr.io/x/y:1.2-rc") == "ghcr.io/x/y:1.2-rc"
    assert normalize_ref("docker.io/library/python:3.11") == "python:3.11"
    assert normalize_ref("docker.io/sko/test") == "sko/test:latest"
    for bad in ("UPPER", "a b", "", "../x", "a:", "a:-tag", "x" * 300):
        with pytest.raises(InvalidInputError):
            normalize_ref(bad)


def test_multiple_refs_remove_and_retag(store: ImageStore, tmp_path: Path) -> None:
    a = tb.build_image([[F("a", "1")]])
    b = tb.build_image([[F("b", "2")]])
    ia = store.import_archive(tb.write_docker_archive(a, tmp_path / "a.tar", tags=["x:1", "x:latest"]))
    assert ia.refs == ["x:1", "x:latest"]
    with pytest.raises(ConflictError, match="2 refs"):
        store.remove(ia.id)
    # importing another image under an existing ref moves the ref
    store.import_archive(tb.write_docker_archive(b, tmp_path / "b.tar"), ref="x:latest")
    assert store.get("x:latest").id == b.config_digest
    assert store.get(ia.id).refs == ["x:1"]
    assert store.remove("x:1") == ["x:1"]
    with pytest.raises(NotFoundError):
        store.get(ia.id)
    assert [i.id for i in store.list()] == [b.config_digest]


def test_leases_block_remove_until_released(store: ImageStore, tmp_path: Path) -> None:
    image = store.import_archive(
        tb.write_oci_layout(tb.build_image([[F("a", "1")]]), tmp_path / "o"), ref="l:1"
    )
    store.lease(image.id, "fd-sandbox-1")
    store.lease("l:1", "fd-sandbox-2")
    assert store.get("l:1").leases == ["fd-sandbox-1", "fd-sandbox-2"]
    with pytest.raises(ConflictError, match="in use"):
        store.remove("l:1")
    store.release(image.id, "fd-sandbox-2")
    with pytest.raises(ConflictError):
        store.remove("l:1")
    # force untags; the image stays (invisible) until the last lease goes, and gc keeps its layers
    store.remove("l:1", force=True)
    with pytest.raises(NotFoundError):
        store.get("l:1")
    dirs = store.layer_dirs(image)
    store.gc()
    assert all(d.is_dir() for d in dirs)
    store.release(image.id, "fd-sandbox-1")
    report = store.gc()
    assert not any(d.exists() for d in dirs)
    assert image.id in report.removed_blobs and report.removed_layers
    assert tb.leftovers(store)["blobs"] == []


def test_gc_keeps_shared_layers(store: ImageStore, tmp_path: Path) -> None:
    base = [D("usr"), F("usr/lib", "shared")]
    one = store.import_archive(
        tb.write_docker_archive(tb.build_image([base, [F("one", "1")]]), tmp_path / "1.tar"), ref="one:1"
    )
    two = store.import_archive(
        tb.write_docker_archive(tb.build_image([base, [F("two", "2")]]), tmp_path / "2.tar"), ref="two:1"
    )
    assert store.layer_dirs(one)[0] == store.layer_dirs(two)[0]  # unpacked once, shared
    assert store.gc().removed_blobs == []
    store.remove("one:1")
    report = store.gc()
    assert len(report.removed_layers) == 1 and report.freed_bytes > 0
    assert one.id in report.removed_blobs
    assert all(d.is_dir() for d in store.layer_dirs(two))
    store.remove("two:1")
    store.gc()
    left = tb.leftovers(store)
    assert left["blobs"] == [] and left["layers"] == [] and left["images"] == []


def test_layer_dirs_reunpack_when_missing(store: ImageStore, tmp_path: Path) -> None:
    import shutil

    image = store.import_archive(
        tb.write_oci_layout(tb.build_image([[F("a", "1")]]), tmp_path / "o"), ref="r:1"
    )
    d = store.layer_dirs(image)[0]
    shutil.rmtree(d.parent)
    assert (store.layer_dirs(image)[0] / "a").read_text() == "1"


def test_concurrent_imports_unpack_once(settings: Settings, tmp_path: Path) -> None:
    img = tb.three_layer_image()
    path = tb.write_oci_layout(img, tmp_path / "o")
    errors: list[BaseException] = []
    results = []

    def run(i: int) -> None:
        try:
            results.append(ImageStore(settings).import_archive(path, ref=f"c:{i}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = ImageStore(settings)
    assert store.get("c:0").refs == ["c:0", "c:1", "c:2", "c:3"]
    layers = tb.leftovers(store)["layers"]
    assert len(layers) == 3
    markers = [json.loads((settings.layers_dir / x / ".complete").read_text()) for x in layers]
    assert {m["diff_id"] for m in markers} == set(img.diff_ids)


def test_reimport_is_idempotent(store: ImageStore, tmp_path: Path) -> None:
    path = tb.write_oci_layout(tb.three_layer_image(), tmp_path / "o")
    a = store.import_archive(path, ref="same:1")
    before = tb.leftovers(store)
    b = store.import_archive(path, ref="same:1")
    assert a.id == b.id and tb.leftovers(store) == before


# --- writer -------------------------------------------------------------------------------------------
def _rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/app").write_text("#!/bin/sh\n")
    os.chmod(root / "usr/bin/app", 0o4755)
    (root / "bin").symlink_to("usr/bin")
    os.link(root / "usr/bin/app", root / "usr/bin/app2")
    (root / "etc").mkdir()
    (root / "etc/hostname").write_text("x\n")
    os.mkfifo(root / "etc/fifo")
    return root


def test_create_image_deterministic_and_roundtrip(settings: Settings, tmp_path: Path) -> None:
    store = ImageStore(settings)
    root = _rootfs(tmp_path)
    cfg = ImageConfig(cmd=["/usr/bin/app"], env=["PATH=/usr/bin"], working_dir="/", labels={"k": "v"})
    a = store.create_image(root, cfg, ref="base/test:1", mtime=1_600_000_000)
    b = store.create_image(root, cfg, ref="base/test:2", mtime=1_600_000_000)
    assert a.id == b.id and a.manifest_digest == b.manifest_digest
    assert store.get("base/test:1").refs == ["base/test:1", "base/test:2"]
    layer = store.layer_dirs(a)[0]
    assert (layer / "usr/bin/app").stat().st_mode & stat.S_ISUID
    assert os.readlink(layer / "bin") == "usr/bin"
    assert (layer / "usr/bin/app").stat().st_ino == (layer / "usr/bin/app2").stat().st_ino
    assert stat.S_ISFIFO((layer / "etc/fifo").lstat().st_mode)
    assert int((layer / "etc/hostname").stat().st_mtime) == 1_600_000_000
    assert a.config == cfg
    # export -> import into a fresh store gives the same image
    out = store.export_oci_archive("base/test:1", tmp_path / "export.tar")
    other = ImageStore(Settings(data_dir=tmp_path / "other", run_dir=tmp_path / "run2"))
    again = other.import_archive(out)
    assert again.id == a.id and again.manifest_digest == a.manifest_digest and again.refs == ["base/test:1"]


def test_create_image_from_overlay_style_layers(store: ImageStore, tmp_path: Path) -> None:
    """Dirs holding overlay whiteouts (char 0/0, opaque xattr) become .wh. entries again."""
    lower = tmp_path / "lower"
    (lower / "d").mkdir(parents=True)
    (lower / "d/old").write_text("old")
    (lower / "gone").write_text("x")
    upper = tmp_path / "upper"
    (upper / "d").mkdir(parents=True)
    (upper / "d/new").write_text("new")
    os.setxattr(upper / "d", "trusted.overlay.opaque", b"y")
    os.mknod(upper / "gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    image = store.create_image([lower, upper], ImageConfig(), ref="wh/test:1")
    blobs = [store.content.path(x.digest) for x in image.layers]
    apply_layers(blobs, tmp_path / "flat")
    assert sorted(str(p.relative_to(tmp_path / "flat")) for p in (tmp_path / "flat").rglob("*")) == [
        "d",
        "d/new",
    ]


def test_add_layer_source_deploy(store: ImageStore, tmp_path: Path) -> None:
    base = store.create_image(
        _rootfs(tmp_path), ImageConfig(cmd=["/bin/sh"], env=["PATH=/usr/bin"]), ref="base:1"
    )
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "handler.py").write_text("def handle(x):\n    return x\n")
    (src / "pkg/mod.py").write_text("")
    fn = store.add_layer(
        "base:1",
        src,
        dest="/function",
        ref="fn/echo:1",
        config_overrides={"cmd": ["python3", "/function/handler.py"], "working_dir": "/function"},
    )
    assert len(fn.layers) == len(base.layers) + 1
    assert fn.layers[:-1] == base.layers
    assert fn.config.cmd == ["python3", "/function/handler.py"] and fn.config.env == ["PATH=/usr/bin"]
    top = store.layer_dirs(fn)[-1]
    assert (top / "function/handler.py").read_text().startswith("def handle")
    assert (top / "function/pkg/mod.py").stat().st_uid == 0
    assert store.layer_dirs(fn)[:-1] == store.layer_dirs(base)
    with pytest.raises(InvalidInputError):
        store.add_layer("base:1", src, dest="/../etc", ref="fn/bad:1")
    with pytest.raises(InvalidInputError):
        store.add_layer("base:1", src, ref="fn/bad:1", config_overrides={"env": ["NOEQUALS"]})
    assert not store.exists("fn/bad:1")


def test_symlink_entries_are_never_followed_on_import(store: ImageStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    img = tb.build_image([[L("abs", str(outside)), L("rel", "../../../../../../"), F("plain", "p")]])
    image = store.import_archive(tb.write_oci_layout(img, tmp_path / "o"), ref="links:1")
    d = store.layer_dirs(image)[0]
    assert os.readlink(d / "abs") == str(outside) and os.readlink(d / "rel") == "../../../../../../"
    assert list(outside.iterdir()) == []


def test_create_image_zstd_and_gzipped_docker_save(store: ImageStore, tmp_path: Path) -> None:
    import gzip as gz

    root = _rootfs(tmp_path)
    image = store.create_image(root, ImageConfig(), ref="z/std:1", compression="zstd", mtime=0)
    assert image.layers[0].media_type.endswith("+zstd")
    assert (store.layer_dirs(image)[0] / "etc/hostname").read_text() == "x\n"
    # `docker save | gzip` style input, with a layer repeated (same blob, two chain ids)
    layer = [F("same", "1")]
    archive = tb.write_docker_archive(tb.build_image([layer, layer, [F("top", "2")]]), tmp_path / "d.tar")
    gzipped = tmp_path / "d.tar.gz"
    gzipped.write_bytes(gz.compress(archive.read_bytes()))
    img = store.import_archive(gzipped, ref="gz/save:1")
    assert len(img.layers) == 3 and len({x.chain_id for x in img.layers}) == 3
    assert img.layers[0].digest == img.layers[1].digest


def test_tag(store: ImageStore, tmp_path: Path) -> None:
    a = store.import_archive(
        tb.write_oci_layout(tb.build_image([[F("a", "1")]]), tmp_path / "a"), ref="t/a:1"
    )
    b = store.import_archive(
        tb.write_oci_layout(tb.build_image([[F("b", "2")]]), tmp_path / "b"), ref="t/b:1"
    )
    assert store.tag(a.id, "t/a:latest").refs == ["t/a:1", "t/a:latest"]
    store.tag("t/b:1", "t/a:latest")  # moves the ref
    assert store.get("t/a:latest").id == b.id
    with pytest.raises(InvalidInputError):
        store.tag("t/a:1", "Bad Ref")
    with pytest.raises(NotFoundError):
        store.tag("nope:1", "x:1")


def test_release_all(store: ImageStore, tmp_path: Path) -> None:
    a = store.import_archive(
        tb.write_oci_layout(tb.build_image([[F("a", "1")]]), tmp_path / "a"), ref="r/a:1"
    )
    b = store.import_archive(
        tb.write_oci_layout(tb.build_image([[F("b", "2")]]), tmp_path / "b"), ref="r/b:1"
    )
    store.lease(a.id, "fd-dead")
    store.lease(b.id, "fd-dead")
    store.lease(b.id, "fd-alive")
    store.remove("r/a:1", force=True)
    assert sorted(store.release_all("fd-dead")) == sorted([a.id, b.id])
    assert store.get("r/b:1").leases == ["fd-alive"]
    assert a.id not in tb.leftovers(store)["images"]


def test_bare_tag_annotation_gives_no_name(store: ImageStore, tmp_path: Path) -> None:
    img = tb.build_image([[F("a", "1")]])
    image = store.import_archive(tb.write_oci_layout(img, tmp_path / "o", ref_name="latest"))
    assert image.refs == [] and store.get(image.short_id).id == img.config_digest
    assert store.tag(image.short_id, "named:1").refs == ["named:1"]
