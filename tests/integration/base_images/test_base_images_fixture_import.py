"""The multi-layer fixture image goes through the real image store in all three formats, and the
unpacked layers show the expected tree both through a real read-only overlayfs mount and through the
store's flat-copy merge (whiteouts, opaque directory, hard links, owners, modes)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from faasd.config import Settings
from fixtures.images import HOSTILE_KINDS, LayeredImage, build_hostile_image, build_layered_image

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def layered(tmp_path_factory: pytest.TempPathFactory) -> LayeredImage:
    return build_layered_image(tmp_path_factory.mktemp("layered"))


@pytest.fixture
def store(settings: Settings) -> Any:
    from faasd.images.store import ImageStore

    return ImageStore(settings)


@pytest.fixture
def overlay_mount(tmp_path: Path) -> Iterator[Any]:
    mounted: list[Path] = []

    def mount(lowers_lowest_first: list[Path]) -> Path:
        target = tmp_path / f"merged{len(mounted)}"
        target.mkdir()
        lowerdir = ":".join(str(p) for p in reversed(lowers_lowest_first))
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lowerdir}", str(target)],
                       check=True, capture_output=True)
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", str(target)], check=False, capture_output=True)


@pytest.mark.parametrize("fmt", ["docker_archive", "oci_archive", "oci_layout"])
def test_fixture_imports_with_three_layers_and_the_expected_tree(
    fmt: str, layered: LayeredImage, store: Any, overlay_mount: Any, tmp_path: Path, unique_id: str
) -> None:
    ref = f"fixture/{unique_id}:v1"
    image = store.import_archive(getattr(layered, fmt), ref=ref)
    assert ref in image.refs and len(image.layers) == layered.layer_count
    assert image.config.cmd == ["/usr/bin/hello"] and image.config.working_dir == "/srv"
    assert image.config.labels["org.faasd.test"] == "layered"

    lowers = [Path(p) for p in store.layer_dirs(image)]
    assert len(lowers) == 3
    layered.assert_tree(overlay_mount(lowers))

    from faasd.images.extract import flatten_layer_dirs

    flat = tmp_path / "flat"
    flatten_layer_dirs(lowers, flat)
    layered.assert_tree(flat)


def test_all_formats_give_the_same_image(layered: LayeredImage, store: Any, unique_id: str) -> None:
    ids = {store.import_archive(getattr(layered, fmt), ref=f"fixture/{unique_id}-{i}:v1").id
           for i, fmt in enumerate(("docker_archive", "oci_archive", "oci_layout"))}
    assert len(ids) == 1


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
@pytest.mark.parametrize("fmt", ["docker_archive", "oci_archive"])
def test_hostile_fixture_never_touches_the_host(kind: str, fmt: str, store: Any, tmp_path: Path,
                                                unique_id: str) -> None:
    from faasd.errors import InvalidInputError

    target = tmp_path / "host" / "target"
    target.parent.mkdir()
    if kind == "whiteout-escape":
        target.write_text("must survive")
    img = build_hostile_image(tmp_path / "img", kind, target)
    try:
        image = store.import_archive(getattr(img, fmt), ref=f"hostile/{unique_id}:v1")
    except InvalidInputError:
        image = None  # refusing the layer is a fine answer
    if kind == "whiteout-escape":
        assert target.read_text() == "must survive"
    else:
        assert not target.exists() and not target.is_symlink()
    expected_host = ["target"] if kind == "whiteout-escape" else []
    assert sorted(p.name for p in target.parent.iterdir()) == expected_host
    if image is not None:  # neutralised instead: whatever landed, landed inside the layer dir
        top = Path(store.layer_dirs(image)[-1])
        assert (top / "ok.txt").read_text() == "harmless\n"
