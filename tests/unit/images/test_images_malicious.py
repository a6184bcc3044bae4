"""Hostile archives: each must fail with a clear InvalidInputError and leave nothing behind."""

from __future__ import annotations

import gzip
import json
import os
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.errors import InvalidInputError
from faasd.images import ExtractLimits, ImageStore
from fixtures import images as tb
from fixtures.images import D, Entry, F, H, L

pytestmark = [pytest.mark.unit, pytest.mark.skipif(os.geteuid() != 0, reason="overlay layer dirs need root")]

EMPTY: dict[str, list[str]] = {"images": [], "refs": [], "blobs": [], "layers": [], "ingest": []}


@pytest.fixture
def store(settings: Settings) -> ImageStore:
    return ImageStore(settings)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "passwd").write_text("original\n")
    return d


def _assert_rejected(
    store: ImageStore, archive: Path, match: str, outside: Path | None = None
) -> InvalidInputError:
    root = store.settings.data_dir.parent
    before = tb.snapshot_tree(root, exclude=store.settings.data_dir)
    with pytest.raises(InvalidInputError, match=match) as info:
        store.import_archive(archive, ref="evil/image:1")
    assert tb.leftovers(store) == EMPTY
    assert tb.snapshot_tree(root, exclude=store.settings.data_dir) == before
    if outside is not None:
        assert sorted(os.listdir(outside)) == ["passwd"]
        assert (outside / "passwd").read_text() == "original\n"
    return info.value


def _docker(tmp_path: Path, layers: list[list[Entry]], **kw: object) -> Path:
    img = tb.build_image([[D("ok"), F("ok/file", "fine")], *layers], **kw)  # type: ignore[arg-type]
    return tb.write_docker_archive(img, tmp_path / f"evil-{uuid.uuid4().hex[:6]}.tar")


def test_dotdot_traversal(store: ImageStore, tmp_path: Path, outside: Path) -> None:
    depth = "../" * 12
    archive = _docker(tmp_path, [[F(f"{depth}{outside.relative_to('/')}/passwd", "pwned")]])
    err = _assert_rejected(store, archive, r"'\.\.' path component", outside)
    assert "passwd" in err.message


def test_dotdot_in_middle(store: ImageStore, tmp_path: Path, outside: Path) -> None:
    archive = _docker(tmp_path, [[D("a"), F("a/../../x", "pwned")]])
    _assert_rejected(store, archive, "path traversal", outside)


def test_absolute_path_is_confined(store: ImageStore, tmp_path: Path, outside: Path) -> None:
    """Absolute names are stripped of the leading '/' (like Docker): they land inside the layer."""
    archive = _docker(tmp_path, [[F(f"{outside}/passwd", "inside")]])
    image = store.import_archive(archive, ref="abs/image:1")
    assert (outside / "passwd").read_text() == "original\n"
    top = store.layer_dirs(image)[-1]
    assert (top / str(outside).lstrip("/") / "passwd").read_text() == "inside"


def test_symlink_then_file_through_it(store: ImageStore, tmp_path: Path, outside: Path) -> None:
    archive = _docker(tmp_path, [[L("link", str(outside)), F("link/passwd", "pwned")]])
    _assert_rejected(store, archive, "symlink or not a directory", outside)


def test_relative_symlink_escape_then_write(store: ImageStore, tmp_path: Path, outside: Path) -> None:
    archive = _docker(
        tmp_path, [[D("d"), L("d/up", "../../../../../../../../" + str(outside)), F("d/up/passwd", "pwned")]]
    )
    _assert_rejected(store, archive, "will not write through it", outside)


def test_symlink_in_lower_layer_then_write_in_upper(store: ImageStore, tmp_path: Path, outside: Path) -> None:
    """Each layer is its own dir, so a lower-layer link is never in the way; the write stays inside."""
    archive = _docker(tmp_path, [[L("link", str(outside))], [D("link"), F("link/passwd", "upper")]])
    image = store.import_archive(archive, ref="lower/link:1")
    assert (outside / "passwd").read_text() == "original\n"
    assert (store.layer_dirs(image)[-1] / "link/passwd").read_text() == "upper"


def test_symlink_to_etc_then_write(store: ImageStore, tmp_path: Path) -> None:
    name = f"faasd-test-{uuid.uuid4().hex}"
    archive = _docker(
        tmp_path, [[L("etc", "/etc"), F(f"etc/{name}", "pwned"), F("etc/passwd", "root::0:0::/:/bin/sh")]]
    )
    before = Path("/etc/passwd").stat()
    _assert_rejected(store, archive, "symlink or not a directory")
    assert not Path("/etc", name).exists()
    assert Path("/etc/passwd").stat().st_mtime_ns == before.st_mtime_ns


def test_hardlink_to_etc_shadow(store: ImageStore, tmp_path: Path) -> None:
    archive = _docker(tmp_path, [[H("shadow", "/etc/shadow")]])
    _assert_rejected(store, archive, "hard link target")
    archive = _docker(tmp_path, [[H("shadow", "../../../../../../etc/shadow")]])
    _assert_rejected(store, archive, "path traversal")


def test_hardlink_to_symlink_pointing_outside(store: ImageStore, tmp_path: Path, outside: Path) -> None:
    archive = _docker(tmp_path, [[L("s", str(outside / "passwd")), H("h", "s"), F("h", "pwned")]])
    _assert_rejected(store, archive, "not a regular file", outside)


def test_hardlink_to_lower_layer_file(store: ImageStore, tmp_path: Path) -> None:
    archive = _docker(tmp_path, [[H("h", "ok/file")]])
    _assert_rejected(store, archive, "not a file earlier in this layer")


@pytest.mark.parametrize("kind", ["char", "block"])
def test_device_nodes(store: ImageStore, tmp_path: Path, kind: str) -> None:
    archive = _docker(tmp_path, [[D("dev"), Entry("dev/sda", kind, mode=0o666)]])
    _assert_rejected(store, archive, "device nodes are not allowed")


def test_sparse_size_bomb(store: ImageStore, tmp_path: Path) -> None:
    """A GNU sparse (PAX 0.0) member that claims 100 GiB: refused before anything is written."""
    sparse = Entry(
        "huge",
        "file",
        data=b"x",
        pax={
            "GNU.sparse.size": str(100 * 1024**3),
            "GNU.sparse.numblocks": "1",
            "GNU.sparse.offset": "0",
            "GNU.sparse.numbytes": "1",
        },
    )
    archive = _docker(tmp_path, [[sparse]])
    _assert_rejected(store, archive, "size bomb")


def test_gzip_bomb(settings: Settings, tmp_path: Path) -> None:
    store = ImageStore(settings, ExtractLimits(max_ratio=100, ratio_grace_bytes=1024 * 1024))
    archive = _docker(tmp_path, [[F("zeros", b"\0" * (32 * 1024 * 1024))]])
    _assert_rejected(store, archive, "compression ratio")


def test_total_size_limit(settings: Settings, tmp_path: Path) -> None:
    store = ImageStore(settings, ExtractLimits(max_bytes=2 * 1024 * 1024))
    archive = _docker(tmp_path, [[F("big", os.urandom(3 * 1024 * 1024))]])
    _assert_rejected(store, archive, "size limit")


def test_too_many_entries(settings: Settings, tmp_path: Path) -> None:
    store = ImageStore(settings, ExtractLimits(max_entries=100))
    archive = _docker(tmp_path, [[F(f"f{i}", "") for i in range(150)]])
    _assert_rejected(store, archive, "more than 100 entries")


def test_huge_pax_header(store: ImageStore, tmp_path: Path) -> None:
    archive = _docker(tmp_path, [[F("x", "1", pax={"comment": "A" * (2 * 1024 * 1024)})]])
    _assert_rejected(store, archive, "header")


def test_very_long_name(store: ImageStore, tmp_path: Path) -> None:
    archive = _docker(tmp_path, [[F("n" * 5000, "x")]])
    _assert_rejected(store, archive, "longer than")


def test_layer_digest_mismatch(store: ImageStore, tmp_path: Path) -> None:
    img = tb.build_image([[F("a", "good")], [F("b", "good")]])
    layout = tb.write_oci_layout(img, tmp_path / "oci")
    blob = layout / "blobs/sha256" / tb.sha(img.layers[1])[7:]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    blob.write_bytes(bytes(data))
    _assert_rejected(store, layout, "digest mismatch|does not match")


def test_diff_id_mismatch(store: ImageStore, tmp_path: Path) -> None:
    img = tb.build_image([[F("a", "x")], [F("b", "y")]], diff_ids=[tb.sha(b"a"), tb.sha(b"b")])
    archive = tb.write_docker_archive(img, tmp_path / "d.tar")
    _assert_rejected(store, archive, "image config says")


def test_truncated_gzip(store: ImageStore, tmp_path: Path) -> None:
    good = gzip.compress(tb.layer_tar([F("f", os.urandom(200_000))]), mtime=0)
    img = tb.build_image([[F("a", "x")], good[: len(good) // 2]], compression="none")
    archive = tb.write_docker_archive(img, tmp_path / "d.tar")
    _assert_rejected(store, archive, "corrupt or truncated|truncated")


def test_garbage_layer(store: ImageStore, tmp_path: Path) -> None:
    img = tb.build_image([os.urandom(4096)], compression="none")
    _assert_rejected(store, tb.write_docker_archive(img, tmp_path / "d.tar"), "not a tar archive|corrupt")


@pytest.mark.parametrize("content", [b"{not json", b'{"a": 1}', b"[{}]", b'[{"Config": 1, "Layers": []}]'])
def test_bad_docker_manifest_json(store: ImageStore, tmp_path: Path, content: bytes) -> None:
    img = tb.build_image([[F("a", "x")]])
    archive = tb.write_docker_archive(img, tmp_path / "d.tar", manifest_override=content)
    _assert_rejected(store, archive, "manifest.json")


def test_bad_oci_manifest_json(store: ImageStore, tmp_path: Path) -> None:
    img = tb.build_image([[F("a", "x")]])
    bad = b'{"schemaVersion": 2, "config": "nope", "layers": []}'
    img.manifest = bad
    _assert_rejected(store, tb.write_oci_layout(img, tmp_path / "oci"), "manifest .* is invalid")


def test_manifest_references_missing_blob(store: ImageStore, tmp_path: Path) -> None:
    img = tb.build_image([[F("a", "x")], [F("b", "y")]])
    layout = tb.write_oci_layout(img, tmp_path / "oci")
    (layout / "blobs/sha256" / tb.sha(img.layers[1])[7:]).unlink()
    _assert_rejected(store, layout, "missing")


def test_missing_config_in_docker_archive(store: ImageStore, tmp_path: Path) -> None:
    img = tb.build_image([[F("a", "x")]])
    manifest = [
        {
            "Config": "0" * 64 + ".json",
            "RepoTags": ["a:b"],
            "Layers": [f"{tb.sha(img.layers[0])[7:]}/layer.tar"],
        }
    ]
    archive = tb.write_docker_archive(img, tmp_path / "d.tar", manifest_override=manifest)
    _assert_rejected(store, archive, "missing")


def test_archive_member_with_dotdot(store: ImageStore, tmp_path: Path) -> None:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tf:
        data = json.dumps([{"Config": "../c.json", "Layers": []}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        import io

        tf.addfile(info, io.BytesIO(data))
    _assert_rejected(store, path, r"'\.\.'")


def test_not_an_archive(store: ImageStore, tmp_path: Path) -> None:
    p = tmp_path / "junk.tar"
    p.write_bytes(os.urandom(10_000))
    _assert_rejected(store, p, "not a readable tar archive")


def test_failed_import_keeps_blobs_of_other_images(store: ImageStore, tmp_path: Path) -> None:
    shared = [D("ok"), F("ok/file", "fine")]
    good = store.import_archive(
        tb.write_docker_archive(tb.build_image([shared]), tmp_path / "g.tar"), ref="good:1"
    )
    before = tb.leftovers(store)
    bad = tb.build_image([shared, [F("../x", "evil")]])
    with pytest.raises(InvalidInputError):
        store.import_archive(tb.write_docker_archive(bad, tmp_path / "b.tar"), ref="bad:1")
    assert tb.leftovers(store) == before
    assert (store.layer_dirs(good)[0] / "ok/file").read_text() == "fine"


Builder = Callable[[Path], Path]
