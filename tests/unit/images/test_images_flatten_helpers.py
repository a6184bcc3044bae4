"""faasd.extract_docker_image (whiteouts, opaque dirs, safety, digests) and faasd.image_command."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import faasd
from faasd.errors import InvalidInputError
from faasd.images.models import ImageConfig
from fixtures.images import D, Entry, F, L, build_image, write_docker_archive

pytestmark = pytest.mark.unit


def _archive(tmp_path: Path, layers: list[list[Entry]], **kw: object) -> io.BytesIO:
    img = build_image(layers, **kw)  # type: ignore[arg-type]
    path = write_docker_archive(img, tmp_path / "img.tar")
    return io.BytesIO(path.read_bytes())


def test_flatten_applies_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    lower = [D("a"), F("a/x", "x"), F("a/y", "y"), F("keep", "k"), F("gone", "g"), D("b"), F("b/old", "o")]
    upper = [D("a"), F("a/.wh..wh..opq"), F("a/z", "z"), F(".wh.gone"), F("b/new", "n"), L("link", "keep")]
    fileobj = _archive(tmp_path, [lower, upper], config={"Entrypoint": ["/bin/tini"], "Cmd": ["run"]})
    root = tmp_path / "rootfs"
    result = faasd.extract_docker_image(fileobj, root)
    assert sorted(p.name for p in (root / "a").iterdir()) == ["z"]
    assert (root / "keep").read_text() == "k" and not (root / "gone").exists()
    assert sorted(p.name for p in (root / "b").iterdir()) == ["new", "old"]
    assert (root / "link").is_symlink() and not list(root.rglob(".wh.*"))
    assert result.names == ["test/image:latest"] and len(result.layers) == 2
    assert result.command == ["/bin/tini", "run"] == faasd.image_command(result.config)


def test_flatten_refuses_unsafe_and_tampered_archives(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"\.\."):
        faasd.extract_docker_image(_archive(tmp_path, [[F("../evil", "x")]]), tmp_path / "r1")
    assert not (tmp_path / "evil").exists()
    bad = _archive(tmp_path, [[F("a", "x")]], diff_ids=["sha256:" + "0" * 64])
    with pytest.raises(InvalidInputError, match="digest"):
        faasd.extract_docker_image(bad, tmp_path / "r2")
    with pytest.raises(InvalidInputError):
        faasd.extract_docker_image(io.BytesIO(b"not a tar"), tmp_path / "r3")


def test_image_command_combines_like_docker() -> None:
    ic = faasd.image_command
    assert ic({"Entrypoint": ["python3"], "Cmd": ["app.py"]}) == ["python3", "app.py"]
    assert ic({"Cmd": ["sh"]}) == ["sh"]
    assert ic({"Entrypoint": ["/entry"], "Cmd": None}) == ["/entry"]
    assert ic({"config": {"Entrypoint": None, "Cmd": ["a", "b"]}}) == ["a", "b"]
    assert ic({"entrypoint": "echo hi"}) == ["/bin/sh", "-c", "echo hi"]
    assert ic(ImageConfig(entrypoint=["e"], cmd=["c"])) == ["e", "c"]
    assert ic({}) == []
    with pytest.raises(InvalidInputError):
        ic({"Cmd": [1]})
