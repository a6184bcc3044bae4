"""Recipe hash, trim rules and caching decisions of the base image builder (no root, no network)."""

from __future__ import annotations

import dataclasses
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

import faasd.baseimages as base
from faasd.baseimages import (
    LABEL_RECIPE_HASH,
    RECIPES,
    TRIM_RULES,
    TrimRule,
    apply_trim_rules,
    archive_path,
    build,
    cli,
    decide,
    ensure,
    get_recipe,
    recipes,
    stale_archives,
    upstream_version,
)
from faasd.errors import InvalidInputError, NotFoundError, RuntimeFailure

pytestmark = pytest.mark.unit

PY = RECIPES["python"]
NODE = RECIPES["node"]


# ------------------------------------------------------------------------------------ recipe hash


def test_recipe_hash_is_stable_and_short_hex() -> None:
    h = PY.recipe_hash()
    assert h == PY.recipe_hash() == get_recipe("python").recipe_hash()
    assert len(h) == 16 and int(h, 16) >= 0
    assert PY.recipe_hash() != NODE.recipe_hash()


@pytest.mark.parametrize(
    "change",
    [
        {"packages": (*PY.packages, "python3-venv")},
        {"suite": "trixie"},
        {"variant": "buildd"},
        {"cmd": ("python3", "-u")},
        {"env": ("PYTHONUNBUFFERED=0",)},
        {"working_dir": "/function"},
        {"version_tag": "3.12"},
        {"trim_rules": (*TRIM_RULES, TrimRule("usr/share/zoneinfo"))},
        {"trim_rules": tuple(r for r in TRIM_RULES if r.pattern != "usr/share/man")},
        {"trim_rules": (TrimRule("usr/share/doc/*"), *TRIM_RULES[1:])},  # same pattern, keep list dropped
    ],
)
def test_recipe_hash_changes_with_every_input(change: dict[str, Any]) -> None:
    assert dataclasses.replace(PY, **change).recipe_hash() != PY.recipe_hash()


def test_recipe_hash_ignores_package_order_and_duplicates() -> None:
    shuffled = dataclasses.replace(PY, packages=tuple(reversed(PY.packages)) + PY.packages[:1])
    assert shuffled.recipe_hash() == PY.recipe_hash()


def test_recipe_hash_changes_with_builder_version(monkeypatch: pytest.MonkeyPatch) -> None:
    before = PY.recipe_hash()
    monkeypatch.setattr(recipes, "BUILDER_VERSION", recipes.BUILDER_VERSION + "-next")
    assert PY.recipe_hash() != before


def test_recipe_hash_does_not_depend_on_the_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    before = PY.recipe_hash()
    monkeypatch.setenv(recipes.MIRROR_ENV, "http://mirror.invalid/debian")
    assert PY.recipe_hash() == before


def test_refs_use_the_versions_bookworm_ships() -> None:
    assert PY.refs == ("faasd/python:3.11", "faasd/python:latest")
    assert NODE.refs == ("faasd/node:18", "faasd/node:latest")
    assert "LANG=C.UTF-8" in PY.image_env and any(e.startswith("PATH=/usr/local/sbin:") for e in PY.image_env)
    assert PY.cmd == ("python3",) and NODE.cmd == ("node",)


def test_unknown_recipe_is_a_clear_input_error() -> None:
    with pytest.raises(InvalidInputError, match="known base images: node, python"):
        get_recipe("ruby")


@pytest.mark.parametrize(
    ("debian", "upstream"),
    [
        ("3.11.2-1+b1", "3.11.2"),
        ("18.20.4+dfsg-1~deb12u2", "18.20.4"),
        ("1:2.3.4-5", "2.3.4"),
        ("20230311", "20230311"),
    ],
)
def test_upstream_version(debian: str, upstream: str) -> None:
    assert upstream_version(debian) == upstream


def test_archive_name_contains_name_and_hash(tmp_path: Path) -> None:
    assert archive_path(PY, tmp_path) == tmp_path / "base" / f"python-{PY.recipe_hash()}.tar"


# ------------------------------------------------------------------------------------ trim rules


def _write(path: Path, data: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)


@pytest.fixture
def fake_rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    _write(root / "usr/bin/python3", "#!binary")
    _write(root / "usr/share/doc/python3/copyright", "licence")
    _write(root / "usr/share/doc/python3/changelog.Debian.gz", "c" * 1000)
    _write(root / "usr/share/doc/libc6/README", "r" * 10)
    _write(root / "usr/share/doc/libc6/copyright", "licence")
    _write(root / "usr/share/man/man1/python3.1.gz", "m" * 100)
    _write(root / "usr/share/locale/de/LC_MESSAGES/dpkg.mo", "d" * 100)
    _write(root / "usr/share/locale/locale.alias", "alias")
    _write(root / "usr/lib/locale/C.utf8/LC_CTYPE", "ctype")
    _write(root / "var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease", "i" * 100)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
    _write(root / "var/cache/apt/pkgcache.bin", "p" * 100)
    _write(root / "var/cache/apt/archives/python3_3.11.2-1+b1_amd64.deb", "deb")
    (root / "var/cache/apt/archives/partial").mkdir(parents=True)
    _write(root / "var/lib/dpkg/status", "Package: python3")
    _write(root / "var/lib/dpkg/status-old", "old")
    _write(root / "var/log/dpkg.log", "log")
    _write(root / "var/log/apt/history.log", "log")
    _write(root / "tmp/.hidden", "h")
    _write(root / "dev/null", "")
    _write(root / "etc/python3/sitecustomize.py", "# keep")
    return root


def test_trim_removes_docs_locales_and_caches_but_keeps_the_runtime(fake_rootfs: Path) -> None:
    report = apply_trim_rules(fake_rootfs)
    kept = {str(p.relative_to(fake_rootfs)) for p in fake_rootfs.rglob("*") if not p.is_dir()}
    assert kept == {
        "usr/bin/python3",
        "usr/share/doc/python3/copyright",
        "usr/share/doc/libc6/copyright",
        "usr/share/locale/locale.alias",
        "usr/lib/locale/C.utf8/LC_CTYPE",
        "var/lib/dpkg/status",
        "etc/python3/sitecustomize.py",
    }
    # directories apt needs stay in place, man is gone entirely
    assert (fake_rootfs / "var/cache/apt/archives/partial").is_dir()
    assert (fake_rootfs / "tmp").is_dir() and (fake_rootfs / "dev").is_dir()
    assert not (fake_rootfs / "usr/share/man").exists()
    assert not (fake_rootfs / "usr/share/locale/de").exists()
    assert report.removed_bytes >= 1000 + 100 + 100 + 100 + 100
    assert report.removed_entries >= 14


def test_trim_is_idempotent(fake_rootfs: Path) -> None:
    apply_trim_rules(fake_rootfs)
    again = apply_trim_rules(fake_rootfs)
    assert again.removed_entries == 0 and again.removed_bytes == 0


def test_trim_never_follows_symlinks_out_of_the_rootfs(tmp_path: Path) -> None:
    """The rootfs is full of absolute symlinks; trimming must not delete the host's files."""
    host = tmp_path / "host"
    _write(host / "doc/pkg/README", "host file")
    _write(host / "man/man1/ls.1.gz", "host man")
    _write(host / "lists/file", "host list")
    root = tmp_path / "rootfs"
    (root / "usr/share").mkdir(parents=True)
    (root / "var/lib/apt").mkdir(parents=True)
    (root / "usr/share/doc").symlink_to(host / "doc")  # intermediate component: must not descend
    (root / "usr/share/man").symlink_to(host / "man")  # matched itself: unlink the link only
    (root / "var/lib/apt/lists").symlink_to(host / "lists")
    apply_trim_rules(root)
    assert (host / "doc/pkg/README").read_text() == "host file"
    assert (host / "man/man1/ls.1.gz").read_text() == "host man"
    assert (host / "lists/file").read_text() == "host list"
    assert not (root / "usr/share/man").is_symlink()
    assert (root / "usr/share/doc").is_symlink()


def test_trim_keeps_only_what_keep_patterns_name(tmp_path: Path) -> None:
    root = tmp_path / "r"
    _write(root / "a/x/keep.txt")
    _write(root / "a/x/drop.txt")
    _write(root / "a/y/drop.txt")
    _write(root / "a/top.txt")
    apply_trim_rules(root, [TrimRule("a/*", keep=("a/*/keep.txt",))])
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == ["a", "a/x", "a/x/keep.txt"]


def test_trim_refuses_a_non_directory(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InvalidInputError):
        apply_trim_rules(f)


# ----------------------------------------------------------------------------- caching decisions


def _fake_archive(path: Path, *, complete: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        names = ["oci-layout", "index.json"] if complete else ["oci-layout"]
        for name in names:
            data = b'{"imageLayoutVersion": "1.0.0"}'
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_decide_build_when_no_archive(tmp_path: Path) -> None:
    state = decide(PY, tmp_path, stored_labels=None)
    assert state.action == "build" and state.archive == archive_path(PY, tmp_path)


def test_decide_build_when_archive_is_truncated_or_incomplete(tmp_path: Path) -> None:
    arch = _fake_archive(archive_path(PY, tmp_path))
    data = arch.read_bytes()
    arch.write_bytes(data[:600])
    assert decide(PY, tmp_path, stored_labels=None).action == "build"
    _fake_archive(arch, complete=False)
    assert decide(PY, tmp_path, stored_labels=None).action == "build"


def test_decide_import_when_store_lacks_the_image(tmp_path: Path) -> None:
    _fake_archive(archive_path(PY, tmp_path))
    assert decide(PY, tmp_path, stored_labels=None).action == "import"


def test_decide_import_when_stored_image_is_from_another_recipe(tmp_path: Path) -> None:
    _fake_archive(archive_path(PY, tmp_path))
    state = decide(PY, tmp_path, stored_labels={LABEL_RECIPE_HASH: "0" * 16}, stored_refs=PY.refs)
    assert state.action == "import" and "0000000000000000" in state.reason


def test_decide_import_when_a_ref_is_missing(tmp_path: Path) -> None:
    _fake_archive(archive_path(PY, tmp_path))
    labels = {LABEL_RECIPE_HASH: PY.recipe_hash()}
    state = decide(PY, tmp_path, stored_labels=labels, stored_refs=[PY.refs[0]])
    assert state.action == "import" and "faasd/python:latest" in state.reason


def test_decide_nothing_when_everything_is_current(tmp_path: Path) -> None:
    _fake_archive(archive_path(PY, tmp_path))
    labels = {LABEL_RECIPE_HASH: PY.recipe_hash()}
    assert decide(PY, tmp_path, stored_labels=labels, stored_refs=PY.refs).action == "none"
    assert decide(PY, tmp_path, stored_labels=labels, stored_refs=PY.refs, rebuild=True).action == "build"


def test_decide_nothing_when_store_is_current_even_without_the_archive(tmp_path: Path) -> None:
    labels = {LABEL_RECIPE_HASH: PY.recipe_hash()}
    assert decide(PY, tmp_path, stored_labels=labels, stored_refs=PY.refs).action == "none"
    assert decide(PY, tmp_path, stored_labels=labels, stored_refs=PY.refs[:1]).action == "build"


def test_stale_archives_are_other_recipes_of_the_same_name_only(tmp_path: Path) -> None:
    current = _fake_archive(archive_path(PY, tmp_path))
    old = _fake_archive(tmp_path / "base" / "python-0123456789abcdef.tar")
    other = _fake_archive(tmp_path / "base" / "node-0123456789abcdef.tar")
    unrelated = _fake_archive(tmp_path / "base" / "python-custom.tar")
    assert stale_archives(PY, tmp_path) == [old]
    assert current.exists() and other.exists() and unrelated.exists()


def test_build_archive_reuses_the_cache_without_root_or_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arch = _fake_archive(archive_path(PY, tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    result = base.build_archive(PY, tmp_path)
    assert result.built is False and result.archive == arch


def test_build_archive_needs_root_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(RuntimeFailure, match="needs root"):
        base.build_archive(PY, tmp_path)
    assert not archive_path(PY, tmp_path).exists()


# ------------------------------------------------------------- ensure_base_images orchestration


@dataclasses.dataclass
class _Cfg:
    labels: dict[str, str]


@dataclasses.dataclass
class _Img:
    id: str
    refs: list[str]
    config: _Cfg


class _RecordingStore:
    """Test double of ImageStore: records imports, serves what was imported."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.images: dict[str, _Img] = {}
        self.imports: list[tuple[Path, str]] = []

    def get(self, ref: str) -> _Img:
        try:
            return self.images[ref]
        except KeyError:
            raise NotFoundError(f"no image {ref}") from None

    def import_archive(self, path: Path, *, ref: str, progress: Any = None) -> _Img:
        self.imports.append((Path(path), ref))
        recipe = next(r for r in RECIPES.values() if path.name == r.archive_name())
        labels = {LABEL_RECIPE_HASH: recipe.recipe_hash()}
        img = self.images.get(ref) or _Img(f"sha256:{recipe.name}", [], _Cfg(labels))
        img.refs.append(ref)
        self.images[ref] = img
        return img

    def tag(self, image_id: str, ref: str) -> _Img:
        img = next(i for i in self.images.values() if i.id == image_id)
        img.refs.append(ref)
        self.images[ref] = img
        return img


def test_ensure_imports_cached_archives_once_then_does_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faasd.config import Settings

    settings = Settings(data_dir=tmp_path / "d", run_dir=tmp_path / "r", cache_dir=tmp_path / "c")
    for r in (PY, NODE):
        _fake_archive(archive_path(r, settings.cache_dir))

    def no_build(*a: Any, **k: Any) -> None:
        raise AssertionError("must not build when the archive is cached")

    monkeypatch.setattr(build, "_build_into", no_build)
    store = _RecordingStore(settings)
    events: list[tuple[str, str]] = []
    images = base.ensure_base_images(store, progress=lambda p, m: events.append((p, m)))  # type: ignore[arg-type]
    assert set(images) == {"python", "node"}
    assert [ref for _, ref in store.imports] == ["faasd/python:3.11", "faasd/node:18"]
    assert sorted(store.images) == sorted([*PY.refs, *NODE.refs])
    assert any(p == "import" for p, _ in events)

    store.imports.clear()
    events.clear()
    again = base.ensure_base_images(store, progress=lambda p, m: events.append((p, m)))  # type: ignore[arg-type]
    assert store.imports == []
    assert again["python"].id == images["python"].id
    assert all(p == "check" and "up to date" in m for p, m in events)


def test_hash_command_prints_the_archive_paths(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FAASD_CACHE_DIR", str(tmp_path))
    assert cli.main(["hash", "python"]) == 0
    out = capsys.readouterr().out.split()
    assert out == ["python", PY.recipe_hash(), str(archive_path(PY, tmp_path))]


def test_ensure_rebuilds_a_cached_archive_the_store_rejects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faasd.config import Settings

    settings = Settings(data_dir=tmp_path / "d", run_dir=tmp_path / "r", cache_dir=tmp_path / "c")
    _fake_archive(archive_path(PY, settings.cache_dir))
    builds: list[tuple[str, bool]] = []

    def fake_build(recipe: Any, cache_dir: Path, *, rebuild: bool = False, **kw: Any) -> None:
        builds.append((recipe.name, rebuild))

    class _CorruptOnce(_RecordingStore):
        def import_archive(self, path: Path, *, ref: str, progress: Any = None) -> _Img:
            if not self.imports:
                self.imports.append((Path(path), "rejected"))
                raise InvalidInputError("layer digest mismatch")
            return super().import_archive(path, ref=ref, progress=progress)

    monkeypatch.setattr(ensure, "build_archive", fake_build)
    store = _CorruptOnce(settings)
    images = base.ensure_base_images(store, ["python"])  # type: ignore[arg-type]
    assert builds == [("python", True)]
    assert images["python"].refs == list(PY.refs)
