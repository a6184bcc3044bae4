"""The shared test-image fixtures (tests/fixtures/images/) build what they promise, with the real
tools: 3 layers, file and directory whiteouts, an opaque directory, docker-archive + OCI archive."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from fixtures.images import (
    HOSTILE_KINDS,
    build_hostile_image,
    build_layered_image,
    oci_layer_members,
    tree_differences,
    unpack_with_umoci,
)

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(
        not (shutil.which("umoci") and shutil.which("skopeo")), reason="needs umoci and skopeo"
    ),
]


@pytest.fixture(scope="module")
def layered(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return build_layered_image(tmp_path_factory.mktemp("layered"))


def test_three_layers_with_the_declared_whiteouts(layered) -> None:  # type: ignore[no-untyped-def]
    layers = oci_layer_members(layered.oci_layout, layered.tag)
    assert len(layers) == layered.layer_count == 3
    for members, whiteouts in zip(layers, layered.layer_whiteouts, strict=True):
        found = sorted(m for m in members if m.rsplit("/", 1)[-1].startswith(".wh."))
        assert found == sorted(whiteouts)
    assert "opt/app/.wh..wh..opq" in layers[2]
    assert "usr/share/doc/readme.txt" in layers[0]


def test_umoci_unpack_gives_the_expected_tree(layered, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rootfs = unpack_with_umoci(layered.oci_layout, layered.tag, tmp_path / "bundle")
    layered.assert_tree(rootfs)


def test_assert_tree_reports_differences(layered, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rootfs = unpack_with_umoci(layered.oci_layout, layered.tag, tmp_path / "bundle")
    (rootfs / "etc/hostname").write_text("changed\n")
    (rootfs / "opt/app/keep.txt").write_text("resurrected\n")
    (rootfs / "usr/bin/hello").chmod(0o755)
    problems = tree_differences(rootfs, layered.expected)
    assert any(p.startswith("etc/hostname: content") for p in problems)
    assert "opt/app/keep.txt: unexpected" in problems
    assert any(p.startswith("usr/bin/hello: mode 755") for p in problems)
    with pytest.raises(AssertionError, match="must have been removed by a whiteout"):
        layered.assert_tree(rootfs)


def test_docker_archive_is_docker_save_format(layered) -> None:  # type: ignore[no-untyped-def]
    with tarfile.open(layered.docker_archive) as tar:
        f = tar.extractfile("manifest.json")
        assert f is not None
        manifest = json.load(f)
        names = set(tar.getnames())
    assert len(manifest) == 1
    assert manifest[0]["RepoTags"] == [layered.docker_repo_tag] == ["docker.io/faasd-test/layered:v1"]
    assert len(manifest[0]["Layers"]) == 3
    assert all(layer in names for layer in manifest[0]["Layers"])


def test_oci_archive_is_a_tagged_layout(layered) -> None:  # type: ignore[no-untyped-def]
    with tarfile.open(layered.oci_archive) as tar:
        f = tar.extractfile("index.json")
        assert f is not None
        index = json.load(f)
        names = set(tar.getnames())
    assert "oci-layout" in names
    refs = [m.get("annotations", {}).get("org.opencontainers.image.ref.name") for m in index["manifests"]]
    assert refs == [layered.tag]


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_hostile_images_carry_the_attack(kind: str, tmp_path: Path) -> None:
    target = tmp_path / "host" / "target"
    img = build_hostile_image(tmp_path / "img", kind, target)
    layers = oci_layer_members(img.oci_layout, img.tag)
    assert len(layers) == 2 and "ok.txt" in layers[1]
    attack = {
        "dotdot": lambda m: m.startswith("../") and m.endswith("target"),
        "absolute": lambda m: m == str(target).lstrip("/"),
        "symlink-escape": lambda m: m == "evil/target",
        "hardlink-escape": lambda m: m == "evil-hard",
        "whiteout-escape": lambda m: m.startswith("../") and m.endswith(".wh.target"),
        "device": lambda m: m == "dev-sda",
    }[kind]
    assert any(attack(m) for m in layers[1])
    assert img.oci_archive.is_file() and img.docker_archive.is_file()
    assert not target.exists()
