"""Layer extraction: entry types, metadata, whiteouts (overlay and flat), limits."""

from __future__ import annotations

import gzip
import io
import os
import stat
from pathlib import Path

import pytest

from faasd.errors import InvalidInputError
from faasd.images import ExtractLimits, apply_layers, flatten_layer_dirs, unpack_layer
from faasd.images.extract import OVERLAY_OPAQUE_XATTR
from fixtures.images import D, Entry, F, H, L, compress, layer_tar, sha, three_layer_image

pytestmark = pytest.mark.unit
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="overlay whiteouts need CAP_MKNOD/CAP_SYS_ADMIN")


def _unpack(
    entries: list[Entry], dest: Path, mode: str = "flat", comp: str = "gzip", **limits: int
) -> object:
    blob = compress(layer_tar(entries), comp)
    return unpack_layer(io.BytesIO(blob), dest, mode, ExtractLimits(**limits))  # type: ignore[arg-type]


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "-> " + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            elif stat.S_ISCHR(st.st_mode):
                out[rel] = f"chr {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
            elif stat.S_ISFIFO(st.st_mode):
                out[rel] = "fifo"
            else:
                out[rel] = p.read_bytes().decode(errors="replace")
    return out


@pytest.mark.parametrize("comp", ["gzip", "zstd", "none"])
def test_basic_entry_types_and_diff_id(tmp_path: Path, comp: str) -> None:
    entries = [
        D("a"),
        F("a/f", "hello", mode=0o640),
        L("a/link", "f"),
        H("a/hard", "a/f"),
        Entry("a/pipe", "fifo", mode=0o600),
        F("./b/implicit/parent.txt", "p"),
    ]
    tar = layer_tar(entries)
    rep = unpack_layer(io.BytesIO(compress(tar, comp)), tmp_path / "out")
    assert rep.diff_id == sha(tar)
    assert rep.compression == comp
    t = _tree(tmp_path / "out")
    assert t["a/f"] == "hello" and t["a/link"] == "-> f" and t["a/hard"] == "hello"
    assert t["a/pipe"] == "fifo" and t["b/implicit/parent.txt"] == "p"
    assert (tmp_path / "out/a/f").stat().st_ino == (tmp_path / "out/a/hard").stat().st_ino
    assert stat.S_IMODE((tmp_path / "out/a/f").stat().st_mode) == 0o640


def test_empty_layer(tmp_path: Path) -> None:
    rep = unpack_layer(io.BytesIO(b""), tmp_path / "out")
    assert rep.entries == 0 and rep.diff_id == sha(b"")
    rep = unpack_layer(io.BytesIO(gzip.compress(layer_tar([]))), tmp_path / "out2")
    assert rep.entries == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_ownership_setuid_and_readonly_dirs(tmp_path: Path) -> None:
    entries = [
        D("ro", mode=0o555, uid=1000, gid=1000),
        F("ro/inside", "x", uid=1000, gid=1001),
        F("suid", "s", mode=0o4755, uid=0, gid=0),
        F("sgid", "g", mode=0o2755, uid=1234, gid=50),
    ]
    _unpack(entries, tmp_path / "out")
    out = tmp_path / "out"
    st = (out / "ro/inside").stat()
    assert (st.st_uid, st.st_gid) == (1000, 1001)
    assert stat.S_IMODE((out / "ro").stat().st_mode) == 0o555
    assert (out / "suid").stat().st_mode & stat.S_ISUID
    sg = (out / "sgid").stat()
    assert sg.st_mode & stat.S_ISGID and sg.st_uid == 1234


def test_mtime_and_leading_slash_stripped(tmp_path: Path) -> None:
    _unpack([F("/abs/file", "x", mtime=1_000_000_000)], tmp_path / "out")
    assert (tmp_path / "out/abs/file").read_text() == "x"
    assert int((tmp_path / "out/abs/file").stat().st_mtime) == 1_000_000_000


def test_duplicate_entries_last_wins(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rep = _unpack(
        [
            F("x", "one"),
            F("x", "two"),
            D("d"),
            F("d/f", "f"),
            F("d", "now a file"),
            L("s", "/etc/passwd"),
            F("s", "regular now"),
        ],
        out,
    )
    assert _tree(out) == {"x": "two", "d": "now a file", "s": "regular now"}
    assert rep.duplicates == 3  # type: ignore[attr-defined]


def test_xattrs_filtered(tmp_path: Path) -> None:
    e = F("f", "x", pax={"SCHILY.xattr.user.demo": "v", "SCHILY.xattr.trusted.overlay.redirect": "/etc"})
    rep = _unpack([e], tmp_path / "out")
    assert os.getxattr(tmp_path / "out/f", "user.demo") == b"v"
    with pytest.raises(OSError):
        os.getxattr(tmp_path / "out/f", "trusted.overlay.redirect")
    assert any("trusted.overlay.redirect" in r for _, r in rep.skipped)  # type: ignore[attr-defined]


def test_device_nodes_skip_mode(tmp_path: Path) -> None:
    rep = _unpack([Entry("dev/null", "char", mode=0o666), F("ok", "1")], tmp_path / "out", devices="skip")  # type: ignore[arg-type]
    assert _tree(tmp_path / "out") == {"ok": "1"}
    assert rep.skipped == [("dev/null", "device node")]  # type: ignore[attr-defined]


# --- whiteouts ------------------------------------------------------------------------------------
def _layer_files(tmp_path: Path, comp: str = "gzip") -> list[Path]:
    img = three_layer_image(comp)
    paths = []
    for i, blob in enumerate(img.layers):
        p = tmp_path / f"layer{i}"
        p.write_bytes(blob)
        paths.append(p)
    return paths


EXPECTED_MERGED = {
    "etc": "dir",
    "etc/keep": "keep",
    "etc/added": "added",
    "etc/gone": "v2",
    "data": "dir",
    "data/new": "new",
    "olddir": "dir",
    "olddir/y": "y",
    "lib": "dir",
    "lib/libx.so": "\x7fELF" + "\0" * 100,
    "bin": "dir",
    "bin/tool": "#!/bin/sh\necho hi\n",
    "bin/tool2": "#!/bin/sh\necho hi\n",
}


def test_flat_apply_whiteouts_delete_for_real(tmp_path: Path) -> None:
    out = tmp_path / "flat"
    reports = apply_layers(_layer_files(tmp_path), out)
    assert _tree(out) == EXPECTED_MERGED
    assert [r.diff_id for r in reports] == three_layer_image().diff_ids


@needs_root
def test_overlay_mode_represents_whiteouts(tmp_path: Path) -> None:
    dirs = []
    for i, p in enumerate(_layer_files(tmp_path)):
        d = tmp_path / f"u{i}"
        with open(p, "rb") as f:
            unpack_layer(f, d, "overlay")
        dirs.append(d)
    t1 = _tree(dirs[1])
    assert t1["etc/gone"] == "chr 0:0"
    assert t1["olddir"] == "chr 0:0"
    assert os.getxattr(dirs[1] / "data", OVERLAY_OPAQUE_XATTR) == b"y"
    assert not any(".wh." in k for k in t1)
    # the flat-copy fallback over overlay-style dirs gives the same view as a flat apply
    flatten_layer_dirs(dirs, tmp_path / "merged")
    assert _tree(tmp_path / "merged") == EXPECTED_MERGED
    with pytest.raises(OSError):
        os.getxattr(tmp_path / "merged/data", OVERLAY_OPAQUE_XATTR)


@needs_root
def test_overlay_whiteout_then_recreate_same_layer_is_opaque(tmp_path: Path) -> None:
    out = tmp_path / "o"
    _unpack([F(".wh.cfg"), D("cfg"), F("cfg/new", "n"), F("keep/.wh.x"), F("keep/x", "mine")], out, "overlay")
    assert os.getxattr(out / "cfg", OVERLAY_OPAQUE_XATTR) == b"y"
    assert _tree(out)["cfg/new"] == "n"
    # a whiteout after the same layer's own entry does not hide that entry
    out2 = tmp_path / "o2"
    _unpack([F("f", "kept"), F(".wh.f")], out2, "overlay")
    assert _tree(out2) == {"f": "kept"}


def test_flat_opaque_keeps_same_layer_entries(tmp_path: Path) -> None:
    out = tmp_path / "flat"
    _unpack([D("d"), F("d/lower1", "1"), D("d/sub"), F("d/sub/lower2", "2")], out)
    _unpack([D("d"), F("d/mine", "m"), D("d/sub"), F("d/.wh..wh..opq"), F("d/sub/mine2", "m2")], out)
    assert _tree(out) == {"d": "dir", "d/mine": "m", "d/sub": "dir", "d/sub/mine2": "m2"}


def test_flat_dir_replaces_lower_symlink(tmp_path: Path) -> None:
    """overlayfs semantics: a directory in an upper layer hides a lower non-directory."""
    out = tmp_path / "flat"
    outside = tmp_path / "outside"
    outside.mkdir()
    _unpack([L("lib", str(outside))], out)
    _unpack([D("lib"), F("lib/x", "x")], out)
    assert _tree(out) == {"lib": "dir", "lib/x": "x"}
    assert list(outside.iterdir()) == []


def test_aufs_metadata_skipped(tmp_path: Path) -> None:
    rep = _unpack([F(".wh..wh.plnk/123.456", "x"), F("a", "a")], tmp_path / "o")
    assert "a" in _tree(tmp_path / "o")
    assert rep.skipped  # type: ignore[attr-defined]


# --- limits -----------------------------------------------------------------------------------------
def test_limits_bytes_entries_ratio(tmp_path: Path) -> None:
    zeros = F("zeros", b"\0" * (4 * 1024 * 1024))
    with pytest.raises(InvalidInputError, match="size bomb"):
        _unpack([zeros], tmp_path / "a", max_bytes=1024 * 1024)
    with pytest.raises(InvalidInputError, match="compression ratio"):
        _unpack([zeros], tmp_path / "b", max_ratio=50, ratio_grace_bytes=0)
    with pytest.raises(InvalidInputError, match="more than 10 entries"):
        _unpack([F(f"f{i}") for i in range(20)], tmp_path / "c", max_entries=10)


def test_long_names(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="longer than 255"):
        _unpack([F("a" * 300, "x")], tmp_path / "a")
    with pytest.raises(InvalidInputError, match="longer than 4096"):
        _unpack([F("/".join(["d" * 200] * 25), "x")], tmp_path / "b")
    _unpack([F("/".join(["d" * 200] * 5) + "/ok", "x")], tmp_path / "c")  # long but legal


def test_missing_end_of_archive_is_tolerated_but_truncated_data_is_not(tmp_path: Path) -> None:
    tar = layer_tar([D("app"), F("app/run", "#!/bin/sh\necho ok\n")])
    # header blocks + 18 data bytes, no padding and no end-of-archive blocks (as umoci writes them)
    cut = 512 * 2 + 18
    rep = unpack_layer(io.BytesIO(gzip.compress(tar[:cut])), tmp_path / "a")
    assert (tmp_path / "a/app/run").read_text() == "#!/bin/sh\necho ok\n"
    assert rep.diff_id == sha(tar[:cut])
    with pytest.raises(InvalidInputError, match="truncated"):
        unpack_layer(io.BytesIO(tar[: 512 * 2 + 5]), tmp_path / "b")
