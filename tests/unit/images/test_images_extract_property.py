"""Property: whatever the tar entries, extraction never creates or changes anything outside the target."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faasd.errors import InvalidInputError
from faasd.images import flatten_layer_dirs, unpack_layer
from fixtures.images import Entry, layer_tar, snapshot_tree

pytestmark = pytest.mark.unit

COMPONENTS = ["a", "b", "..", ".", "", "outside", "target", ".wh.a", ".wh..wh..opq", "c"]
LINK_TARGETS = [
    "/",
    "..",
    "../..",
    "../outside",
    "../../outside",
    "/tmp",
    "a",
    "a/b",
    "../outside/victim",
    "/etc",
    "b/../../outside",
    ".",
]


@st.composite
def member_names(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=5))
    name = "/".join(parts)
    if draw(st.booleans()):
        name = "/" + name
    return name


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    kind = draw(st.sampled_from(["file", "dir", "symlink", "hardlink", "fifo", "char"]))
    name = draw(member_names())
    if kind in ("symlink", "hardlink"):
        target = draw(st.one_of(st.sampled_from(LINK_TARGETS), member_names()))
        return Entry(name, kind, linkname=target)
    return Entry(name, kind, data=b"payload" if kind == "file" else b"")


MODES = ["flat", "overlay"] if os.geteuid() == 0 else ["flat"]


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layers=st.lists(st.lists(entries(), min_size=1, max_size=12), min_size=1, max_size=3))
def test_never_writes_outside(mode: str, layers: list[list[Entry]]) -> None:
    base = Path(tempfile.mkdtemp(prefix="faasd-prop-"))
    try:
        outside = base / "outside"
        outside.mkdir()
        (outside / "victim").write_text("untouched")
        target = base / "target"
        target.mkdir()
        before = snapshot_tree(base, exclude=target)
        for i, layer in enumerate(layers):
            dest = target if mode == "flat" else target / f"l{i}"
            with contextlib.suppress(InvalidInputError):
                unpack_layer(io.BytesIO(layer_tar(layer)), dest, mode)  # type: ignore[arg-type]
        assert snapshot_tree(base, exclude=target) == before
        assert (outside / "victim").read_text() == "untouched"
        # every path under target really is under target (no dir was reached through a link)
        for dirpath, dirnames, filenames in os.walk(target):
            for n in dirnames + filenames:
                p = Path(dirpath) / n
                assert os.path.realpath(p.parent).startswith(str(target))
    finally:
        shutil.rmtree(base)


@pytest.mark.skipif(os.geteuid() != 0, reason="overlay-mode layer dirs need root")
@settings(max_examples=60, deadline=None)
@given(layers=st.lists(st.lists(entries(), min_size=1, max_size=10), min_size=2, max_size=3))
def test_flatten_of_unpacked_layers_stays_inside(layers: list[list[Entry]]) -> None:
    """The flat-copy fallback over overlay-style layer dirs never follows a lower layer's symlink."""
    base = Path(tempfile.mkdtemp(prefix="faasd-prop-"))
    try:
        outside = base / "outside"
        outside.mkdir()
        (outside / "victim").write_text("untouched")
        dirs = []
        for i, layer in enumerate(layers):
            d = base / "layers" / f"l{i}"
            with contextlib.suppress(InvalidInputError):
                unpack_layer(io.BytesIO(layer_tar(layer)), d, "overlay")
            d.mkdir(parents=True, exist_ok=True)
            dirs.append(d)
        before = snapshot_tree(base, exclude=base / "merged")
        flatten_layer_dirs(dirs, base / "merged")
        assert snapshot_tree(base, exclude=base / "merged") == before
        assert (outside / "victim").read_text() == "untouched"
    finally:
        shutil.rmtree(base)
