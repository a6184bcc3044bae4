"""Base runtime images (``faasd/python``, ``faasd/node``) built locally with debootstrap.

There is no registry to pull ``python:3.11`` from, so faasd builds its own base images:

1. ``debootstrap --variant=minbase --include=<packages> bookworm`` into a umoci bundle (with a
   shared ``.deb`` cache so a rebuild does not download everything again);
2. trim docs, man pages, translations, apt lists and caches (:data:`TRIM_RULES`), sanitise
   ``/etc`` (host resolv.conf/hostname), and prove the runtime still works (``chroot`` smoke test);
3. ``umoci repack`` + ``umoci config`` into an OCI layout, written atomically as an OCI archive to
   ``cache_dir/base/<name>-<recipe-hash>.tar``;
4. import the archive into the :class:`~faasd.images.store.ImageStore` as ``faasd/<name>:<version>``
   and ``faasd/<name>:latest``.

The recipe hash covers everything that changes the archive's content (packages, suite, trim rules,
image config, builder version), so CI and repeated start-ups reuse the cached archive and only a
recipe change triggers a rebuild.  ``python -m faasd.images.base ensure`` is what set-up scripts call.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from faasd.config import Settings
from faasd.errors import FaasdError, InvalidInputError, NotFoundError, RuntimeFailure

if TYPE_CHECKING:  # the store imports nothing from here; keep the import lazy to avoid cycles
    from faasd.images.store import Image, ImageStore

BUILDER_VERSION = "1"
"""Bump when the build procedure changes in a way that changes the archive (part of the recipe hash)."""

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
MIRROR_ENV = "FAASD_DEBIAN_MIRROR"
"""Environment override for the Debian mirror debootstrap downloads from (not part of the hash)."""

LABEL_PREFIX = "org.faasd.base."
LABEL_RECIPE_HASH = LABEL_PREFIX + "recipe-hash"
LABEL_NAME = LABEL_PREFIX + "name"
LABEL_VERSION = LABEL_PREFIX + "version"
LABEL_CREATED = "org.opencontainers.image.created"

ProgressCallback = Callable[[str, str], None]
"""``progress(phase, message)``; phases: ``lock``, ``debootstrap``, ``upgrade``, ``trim``, ``check``,
``pack``, ``archive``, ``cleanup``, ``import``, ``done``."""

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_DEBOOTSTRAP_LOG_TAIL = 40
_PER_PACKAGE = re.compile(
    r"I: (Retrieving|Validating|Extracting|Unpacking|Configuring) "
    r"(?!(?:required|base|the|core|additional) )(?!(?:Release|InRelease|Packages)$)\S+"
)
_LOCK_NAME = ".lock"
_BUILD_PREFIX = ".build-"
_TMP_PREFIX = ".tmp-"


# --------------------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class TrimRule:
    """Delete every path matching ``pattern`` (relative to the rootfs, ``fnmatch`` per component),
    except paths matching one of ``keep`` (directories containing a kept path are trimmed inside)."""

    pattern: str
    keep: tuple[str, ...] = ()


TRIM_RULES: tuple[TrimRule, ...] = (
    # Documentation: keep the copyright files (licence compliance), drop the rest.
    TrimRule("usr/share/doc/*", keep=("usr/share/doc/*/copyright",)),
    TrimRule("usr/share/man"),
    TrimRule("usr/share/info"),
    TrimRule("usr/share/groff"),
    TrimRule("usr/share/lintian"),
    TrimRule("usr/share/linda"),
    TrimRule("usr/share/bug"),
    # Translations. C.UTF-8 (usr/lib/locale/C.utf8) is what the images use and stays.
    TrimRule("usr/share/locale/*", keep=("usr/share/locale/locale.alias",)),
    TrimRule("usr/share/i18n/locales"),
    # Package manager state that is rebuilt by `apt-get update`, and caches.
    TrimRule("var/lib/apt/lists/*"),
    TrimRule("var/cache/apt/*.bin"),
    TrimRule("var/cache/apt/archives/*.deb"),
    TrimRule("var/cache/debconf/*-old"),
    TrimRule("var/lib/dpkg/*-old"),
    TrimRule("var/log/*.log"),
    TrimRule("var/log/apt/*"),
    TrimRule("root/.cache"),
    TrimRule("tmp/*"),
    TrimRule("var/tmp/*"),
    # The runtime provides /dev; debootstrap's device nodes have no place in a layer.
    TrimRule("dev/*"),
    TrimRule("debootstrap"),
)

# Written into the image so that packages a derived image installs stay as slim as the base.
DPKG_EXCLUDES = """\
# faasd base image: do not install documentation or translations
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/groff/*
path-exclude=/usr/share/lintian/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
"""

APT_CLEAN = """\
# faasd base image: keep no downloaded packages
APT::Keep-Downloaded-Packages "false";
Binary::apt::APT::Keep-Downloaded-Packages "false";
"""

SOURCES_LIST = """\
deb http://deb.debian.org/debian {suite} main
deb http://deb.debian.org/debian {suite}-updates main
deb http://deb.debian.org/debian-security {suite}-security main
"""

HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


@dataclass(frozen=True)
class BaseRecipe:
    """What goes into one base image. Everything here is part of :meth:`recipe_hash`."""

    name: str
    packages: tuple[str, ...]
    version_package: str
    """The Debian package whose upstream version names the image (``python3`` → 3.11.2)."""
    version_tag: str
    """The tag the image is published under; the build fails if the Debian version does not match."""
    cmd: tuple[str, ...]
    smoke_test: tuple[str, ...]
    """Run in the trimmed rootfs with ``chroot``; must exit 0 and print the version."""
    env: tuple[str, ...] = ()
    working_dir: str = "/"
    suite: str = "bookworm"
    security_updates: bool = True
    """After debootstrap, ``apt-get dist-upgrade`` from ``<suite>-security`` and ``<suite>-updates``
    (debootstrap itself only knows the release as first published)."""
    variant: str = "minbase"
    arch: str = "amd64"
    trim_rules: tuple[TrimRule, ...] = TRIM_RULES

    @property
    def repository(self) -> str:
        return f"faasd/{self.name}"

    @property
    def refs(self) -> tuple[str, str]:
        """``faasd/<name>:<version>`` first (the primary ref), then ``faasd/<name>:latest``."""
        return (f"{self.repository}:{self.version_tag}", f"{self.repository}:latest")

    @property
    def image_env(self) -> tuple[str, ...]:
        return (f"PATH={_PATH}", "LANG=C.UTF-8", *self.env)

    def hash_input(self) -> dict[str, Any]:
        """The canonical description whose sha256 is the recipe hash."""
        return {
            "builder_version": BUILDER_VERSION,
            "name": self.name,
            "suite": self.suite,
            "security_updates": self.security_updates,
            "variant": self.variant,
            "arch": self.arch,
            "packages": sorted(set(self.packages)),
            "version_package": self.version_package,
            "version_tag": self.version_tag,
            "trim_rules": [[r.pattern, sorted(r.keep)] for r in self.trim_rules],
            "etc": {"dpkg": DPKG_EXCLUDES, "apt": APT_CLEAN, "sources": SOURCES_LIST, "hosts": HOSTS},
            "config": {
                "env": list(self.image_env),
                "cmd": list(self.cmd),
                "working_dir": self.working_dir,
            },
            "smoke_test": list(self.smoke_test),
        }

    def recipe_hash(self) -> str:
        """16 hex digits of the sha256 of :meth:`hash_input` (canonical JSON)."""
        blob = json.dumps(self.hash_input(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def archive_name(self) -> str:
        return f"{self.name}-{self.recipe_hash()}.tar"


RECIPES: dict[str, BaseRecipe] = {
    "python": BaseRecipe(
        name="python",
        packages=("python3", "ca-certificates"),
        version_package="python3",
        version_tag="3.11",  # bookworm ships python3 3.11.2
        cmd=("python3",),
        env=("PYTHONUNBUFFERED=1",),
        smoke_test=(
            "python3",
            "-c",
            "import json, ssl, sqlite3, sys; print(sys.version.split()[0])",
        ),
    ),
    "node": BaseRecipe(
        name="node",
        packages=("nodejs", "ca-certificates"),
        version_package="nodejs",
        version_tag="18",  # bookworm ships nodejs 18.20.x
        cmd=("node",),
        smoke_test=(
            "node",
            "-e",
            "require('crypto').createHash('sha256'); console.log(process.versions.node)",
        ),
    ),
}

DEFAULT_NAMES: tuple[str, ...] = ("python", "node")


def get_recipe(name: str) -> BaseRecipe:
    try:
        return RECIPES[name]
    except KeyError:
        known = ", ".join(sorted(RECIPES))
        raise InvalidInputError(f"unknown base image {name!r}; known base images: {known}") from None


# ------------------------------------------------------------------------------------- trimming


@dataclass
class TrimReport:
    removed_entries: int = 0
    removed_bytes: int = 0


def _rel_parts(rel: str) -> list[str]:
    return [p for p in rel.split("/") if p]


def _matches(rel: str, pattern: str) -> bool:
    parts, pat = _rel_parts(rel), _rel_parts(pattern)
    return len(parts) == len(pat) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pat, strict=True))


def _may_contain(rel: str, pattern: str) -> bool:
    """True if some path strictly below ``rel`` could match ``pattern``."""
    parts, pat = _rel_parts(rel), _rel_parts(pattern)
    return len(pat) > len(parts) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pat, strict=False))


def _iter_matches(root: Path, pattern: str) -> Iterator[tuple[Path, str]]:
    """Paths under ``root`` matching ``pattern``, never following a symlink to descend.

    A base image's rootfs is full of absolute symlinks; following one while trimming would delete
    files of the host, so intermediate components must be real directories.
    """
    current: list[tuple[Path, str]] = [(root, "")]
    parts = _rel_parts(pattern)
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        found: list[tuple[Path, str]] = []
        for directory, rel in current:
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if not fnmatch.fnmatchcase(entry.name, part):
                    continue
                if not last and not entry.is_dir(follow_symlinks=False):
                    continue
                found.append((Path(entry.path), f"{rel}/{entry.name}" if rel else entry.name))
        current = found
    yield from current


def _tree_size(path: Path) -> tuple[int, int]:
    """(entries, bytes) of a path, not following symlinks; hardlinked files counted once."""
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        return 1, st.st_size
    entries, size, seen = 1, 0, set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            s = os.lstat(os.path.join(dirpath, name))
            entries += 1
            if not stat.S_ISDIR(s.st_mode) and (s.st_ino, s.st_dev) not in seen:
                seen.add((s.st_ino, s.st_dev))
                size += s.st_size
    return entries, size


def _remove_path(path: Path, rel: str, keep: Sequence[str], report: TrimReport) -> None:
    if any(_matches(rel, k) for k in keep):
        return
    st = path.lstat()
    if stat.S_ISDIR(st.st_mode):
        if any(_may_contain(rel, k) for k in keep):
            for entry in sorted(os.scandir(path), key=lambda e: e.name):
                _remove_path(Path(entry.path), f"{rel}/{entry.name}", keep, report)
            if not any(os.scandir(path)):  # nothing kept inside: the directory goes too
                path.rmdir()
                report.removed_entries += 1
            return
        entries, size = _tree_size(path)
        shutil.rmtree(path)  # rmtree never follows symlinks
    else:
        entries, size = 1, st.st_size
        path.unlink()
    report.removed_entries += entries
    report.removed_bytes += size


def apply_trim_rules(rootfs: Path, rules: Iterable[TrimRule] = TRIM_RULES) -> TrimReport:
    """Delete what ``rules`` match under ``rootfs`` (safely: symlinks are removed, never followed)."""
    report = TrimReport()
    root = Path(rootfs)
    if not root.is_dir() or root.is_symlink():
        raise InvalidInputError(f"{root} is not a directory")
    for rule in rules:
        for path, rel in list(_iter_matches(root, rule.pattern)):
            _remove_path(path, rel, rule.keep, report)
    return report


# ----------------------------------------------------------------------------- caching decisions


@dataclass(frozen=True)
class CacheState:
    """What :func:`ensure_base_images` has to do for one recipe."""

    action: str
    """``none`` (store already has the current image), ``import`` (cached archive), ``build``."""
    archive: Path
    reason: str


def archive_path(recipe: BaseRecipe, cache_dir: Path) -> Path:
    return Path(cache_dir) / "base" / recipe.archive_name()


def decide(
    recipe: BaseRecipe,
    cache_dir: Path,
    *,
    stored_labels: dict[str, str] | None,
    stored_refs: Iterable[str] = (),
    rebuild: bool = False,
) -> CacheState:
    """Pure decision: rebuild, import the cached archive, or nothing.

    ``stored_labels`` are the labels of the image the store has under the primary ref (None when it
    has none), ``stored_refs`` the refs that point at that same image.
    """
    archive = archive_path(recipe, cache_dir)
    if rebuild:
        return CacheState("build", archive, "rebuild requested")
    want = recipe.recipe_hash()
    have = (stored_labels or {}).get(LABEL_RECIPE_HASH)
    missing = [r for r in recipe.refs if r not in set(stored_refs)]
    if stored_labels is not None and have == want and not missing:
        return CacheState("none", archive, "up to date")  # even if the cache dir was cleared
    if stored_labels is None:
        why = "image not in the store"
    elif have != want:
        why = f"stored image has recipe {have}, current recipe is {want}"
    else:
        why = f"refs missing: {', '.join(missing)}"
    if not _valid_archive(archive):
        return CacheState("build", archive, f"{why}; no cached archive {archive.name}")
    return CacheState("import", archive, f"{why}; cached archive {archive.name}")


def _valid_archive(path: Path) -> bool:
    """Cheap check that a cached archive is a complete OCI archive (written atomically, but a
    truncated copy from a CI cache restore must not be trusted)."""
    try:
        if not path.is_file() or path.stat().st_size < 1024:
            return False
        with tarfile.open(path, "r:") as tar:
            names = set(tar.getnames())
    except (OSError, tarfile.TarError):
        return False
    return "index.json" in names and "oci-layout" in names


def stale_archives(recipe: BaseRecipe, cache_dir: Path) -> list[Path]:
    """Cached archives of the same base image built from another recipe (to be deleted)."""
    keep = archive_path(recipe, cache_dir)
    base = Path(cache_dir) / "base"
    pattern = re.compile(rf"^{re.escape(recipe.name)}-[0-9a-f]{{16}}\.tar$")
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if pattern.match(p.name) and p != keep)


# --------------------------------------------------------------------------------- process utils


def _noop(phase: str, message: str) -> None:
    pass


def _run(
    args: Sequence[str],
    *,
    what: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> str:
    try:
        proc = subprocess.run(
            list(args),
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise RuntimeFailure(
            f"{args[0]} is not installed; run scripts/setup-system.sh "
            f"(apt-get install umoci skopeo debootstrap)"
        ) from None
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"{what} did not finish within {timeout:.0f} s: {' '.join(args)}") from None
    if proc.returncode != 0:
        out = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        raise RuntimeFailure(f"{what} failed (exit {proc.returncode}): {' '.join(args)}\n{out}")
    return proc.stdout


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/")
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mnt = line.split()[4]
                mnt = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), mnt)
                if mnt == prefix or mnt.startswith(prefix + "/"):
                    found.append(mnt)
    except OSError:
        return []
    return sorted(found, key=len, reverse=True)


def _remove_workdir(path: Path) -> None:
    """Unmount whatever a killed debootstrap left mounted (proc, sys, devpts), then delete."""
    for mnt in _mounts_under(path):
        subprocess.run(["umount", "--lazy", mnt], capture_output=True, check=False)
    if _mounts_under(path):  # never rmtree into a live proc/sys mount
        raise RuntimeFailure(f"could not unmount everything under {path}; unmount it and delete it by hand")
    shutil.rmtree(path, ignore_errors=True)


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def _build_lock(base_dir: Path, progress: ProgressCallback) -> Iterator[None]:
    """One builder at a time per cache dir (2 cores; and concurrent set-ups must not double-build)."""
    base_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(base_dir / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            progress("lock", f"waiting for another base image build in {base_dir}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        # Holding the lock: any leftover build dir belongs to a builder that died (SIGKILL, power loss).
        for stale in base_dir.iterdir():
            if stale.name.startswith((_BUILD_PREFIX, _TMP_PREFIX)):
                progress("lock", f"removing leftovers of an interrupted build: {stale.name}")
                if stale.is_dir() and not stale.is_symlink():
                    _remove_workdir(stale)
                else:
                    stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)


# -------------------------------------------------------------------------------------- building


@dataclass
class BuildResult:
    recipe: BaseRecipe
    archive: Path
    built: bool
    """False when the cached archive was reused."""
    version: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    archive_bytes: int = 0
    rootfs_bytes: int = 0
    trimmed_bytes: int = 0


def _dpkg_version(rootfs: Path, package: str) -> str:
    status = (rootfs / "var/lib/dpkg/status").read_text(errors="replace")
    for block in status.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(" ")
        )
        if fields.get("Package") == package and "installed" in fields.get("Status", ""):
            return fields["Version"]
    raise RuntimeFailure(f"debootstrap did not install {package!r} (not in {rootfs}/var/lib/dpkg/status)")


def upstream_version(debian_version: str) -> str:
    """``3.11.2-1+b1`` → ``3.11.2``; ``18.20.4+dfsg-1~deb12u2`` → ``18.20.4``; epochs dropped."""
    v = debian_version.split(":", 1)[-1]
    v = v.rsplit("-", 1)[0] if "-" in v else v
    m = re.match(r"[0-9]+(\.[0-9]+)*", v)
    return m.group(0) if m else v


def _debootstrap(
    recipe: BaseRecipe, rootfs: Path, debs: Path, log_path: Path, mirror: str, progress: ProgressCallback
) -> None:
    args = [
        "debootstrap",
        f"--variant={recipe.variant}",
        f"--arch={recipe.arch}",
        f"--include={','.join(sorted(set(recipe.packages)))}",
        f"--cache-dir={debs}",
        recipe.suite,
        str(rootfs),
        mirror,
    ]
    progress("debootstrap", " ".join(args))
    tail: deque[str] = deque(maxlen=_DEBOOTSTRAP_LOG_TAIL)
    env = {"PATH": _PATH, "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    try:
        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
            errors="replace",
            start_new_session=True,  # so Ctrl-C reaches us, and we kill it all
        )
    except FileNotFoundError:
        raise RuntimeFailure("debootstrap is not installed; run scripts/setup-system.sh") from None
    counts: dict[str, int] = {}
    try:
        with open(log_path, "w") as log:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                line = line.rstrip()
                tail.append(line)
                m = _PER_PACKAGE.match(line)
                if m:
                    counts[m.group(1)] = counts.get(m.group(1), 0) + 1
                    continue
                if line.startswith(("I: ", "W: ", "E: ")):
                    progress("debootstrap", line[3:])
        rc = proc.wait()
    except BaseException:
        _kill_group(proc)
        raise
    if rc != 0:
        inner = rootfs / "debootstrap" / "debootstrap.log"
        inner_tail = ""
        if inner.is_file():
            inner_tail = "\n".join(inner.read_text(errors="replace").splitlines()[-_DEBOOTSTRAP_LOG_TAIL:])
        raise RuntimeFailure(
            f"debootstrap of base image {recipe.name!r} failed (exit {rc}); check the network/mirror "
            f"({mirror}, override with {MIRROR_ENV}) and the log below\n"
            + "\n".join(tail)
            + (f"\n--- {inner.name} ---\n{inner_tail}" if inner_tail else ""),
            exit_code=rc,
        )
    if counts:
        progress("debootstrap", "packages: " + ", ".join(f"{k.lower()} {v}" for k, v in counts.items()))


def _share_debs(src: Path, dst: Path) -> None:
    """Hard-link (or copy) ``*.deb`` files from ``src`` to ``dst`` where missing."""
    if not src.is_dir():
        return
    dst.mkdir(parents=True, exist_ok=True)
    for deb in src.glob("*.deb"):
        target = dst / deb.name
        if deb.is_symlink() or not deb.is_file() or target.exists():
            continue
        try:
            os.link(deb, target)
        except OSError:
            shutil.copy2(deb, target)


def _upgrade(
    recipe: BaseRecipe, rootfs: Path, mirror: str, log_path: Path, debs: Path, progress: ProgressCallback
) -> None:
    """``apt-get update && apt-get dist-upgrade`` inside the new rootfs, in a private mount and PID
    namespace (``unshare --mount-proc``): proc is mounted for dpkg's scripts and vanishes with the
    namespace, whatever happens to us."""
    sources = (
        f"deb {mirror} {recipe.suite} main\n"
        f"deb {mirror} {recipe.suite}-updates main\n"
        f"deb {DEFAULT_SECURITY_MIRROR} {recipe.suite}-security main\n"
    )
    _write_text(rootfs / "etc/apt/sources.list", sources)
    env = {"PATH": _PATH, "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
    apt = [
        "apt-get",
        "-q",
        "-y",
        "-o",
        "Acquire::Retries=3",
        "-o",
        "Dpkg::Options::=--force-confold",
        "-o",
        "Dpkg::Use-Pty=0",
    ]
    prefix = [
        "unshare",
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        f"--mount-proc={rootfs}/proc",
        "chroot",
        str(rootfs),
    ]
    apt_archives = rootfs / "var/cache/apt/archives"
    _share_debs(debs, apt_archives)  # apt reuses (after checking) debs cached by an earlier build
    with open(log_path, "a") as log:
        for args in ([*apt, "update"], [*apt, "--no-install-recommends", "dist-upgrade"]):
            progress("upgrade", " ".join(args[:1] + args[-1:]))
            try:
                out = _run(
                    [*prefix, *args],
                    what=f"{' '.join(args[:1] + args[-1:])} in the {recipe.name!r} rootfs",
                    env=env,
                    timeout=600,
                )
            except RuntimeFailure as exc:
                raise RuntimeFailure(
                    f"security updates for base image {recipe.name!r} failed; check the network/mirror "
                    f"({mirror}, {DEFAULT_SECURITY_MIRROR}): {exc.message}"
                ) from None
            log.write(out)
    _share_debs(apt_archives, debs)  # keep the updates for the next build
    summary = re.search(r"^(\d+) upgraded, (\d+) newly installed.*$", out, re.M)
    progress("upgrade", summary.group(0) if summary else "done")


def _write_text(path: Path, text: str) -> None:
    if path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o644)


def _sanitise(recipe: BaseRecipe, rootfs: Path) -> None:
    """Replace what debootstrap copied from the build host, and keep future installs slim."""
    _write_text(rootfs / "etc/resolv.conf", "")
    _write_text(rootfs / "etc/hostname", "localhost\n")
    _write_text(rootfs / "etc/hosts", HOSTS)
    _write_text(rootfs / "etc/apt/sources.list", SOURCES_LIST.format(suite=recipe.suite))
    _write_text(rootfs / "etc/dpkg/dpkg.cfg.d/faasd-slim", DPKG_EXCLUDES)
    _write_text(rootfs / "etc/apt/apt.conf.d/faasd-clean", APT_CLEAN)
    for d in ("proc", "sys", "dev", "tmp", "run"):
        (rootfs / d).mkdir(exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)


def smoke_test(recipe: BaseRecipe, rootfs: Path) -> str:
    """Run the recipe's smoke test in ``rootfs`` with ``chroot``; returns its stdout."""
    env = {"PATH": _PATH, "LANG": "C.UTF-8", "HOME": "/root"}
    try:
        return _run(
            ["chroot", str(rootfs), *recipe.smoke_test],
            what=f"smoke test of {recipe.name}",
            env=env,
            timeout=120,
        ).strip()
    except RuntimeFailure as exc:
        raise RuntimeFailure(
            f"base image {recipe.name!r} does not work after trimming (a trim rule removed something "
            f"the runtime needs?): {exc.message}"
        ) from None


def _tree_bytes(root: Path) -> int:
    return _tree_size(root)[1]


def _write_oci_archive(layout: Path, dest: Path, full_name: str | None = None) -> None:
    """Tar the OCI layout into ``dest`` atomically (tmp file in the same dir, fsync, rename)."""
    tmp = dest.with_name(f"{_TMP_PREFIX}{dest.name}.{uuid.uuid4().hex[:8]}")
    if full_name:
        # umoci names the manifest by tag only ("3.11"); add the full name for importers
        index_path = layout / "index.json"
        index = json.loads(index_path.read_text())
        for desc in index.get("manifests", []):
            desc.setdefault("annotations", {})["io.containerd.image.name"] = full_name
        index_path.write_text(json.dumps(index, separators=(",", ":")))
    try:
        with open(tmp, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for path in sorted(layout.rglob("*")):
                    info = tar.gettarinfo(str(path), arcname=str(path.relative_to(layout)))
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mode = 0o755 if info.isdir() else 0o644
                    if info.isfile():
                        with open(path, "rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, dest)
        dfd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        tmp.unlink(missing_ok=True)


def build_archive(
    recipe: BaseRecipe,
    cache_dir: Path,
    *,
    rebuild: bool = False,
    mirror: str | None = None,
    progress: ProgressCallback | None = None,
) -> BuildResult:
    """Build (or reuse) the OCI archive of ``recipe`` in ``cache_dir/base``. Needs root."""
    progress = progress or _noop
    base_dir = Path(cache_dir) / "base"
    dest = archive_path(recipe, cache_dir)
    if not rebuild and _valid_archive(dest):
        return BuildResult(recipe, dest, built=False, archive_bytes=dest.stat().st_size)
    if os.geteuid() != 0:
        raise RuntimeFailure(
            f"building the {recipe.name!r} base image needs root (debootstrap); run "
            f"`sudo python -m faasd.images.base ensure` once, the archive is then cached in {base_dir}"
        )
    for tool in ("debootstrap", "umoci", "chroot", "unshare"):
        if shutil.which(tool) is None:
            raise RuntimeFailure(f"{tool} is not installed; run scripts/setup-system.sh")
    mirror = mirror or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR
    with _build_lock(base_dir, progress):
        if not rebuild and _valid_archive(dest):  # built by whoever held the lock before us
            return BuildResult(recipe, dest, built=False, archive_bytes=dest.stat().st_size)
        result = BuildResult(recipe, dest, built=True)
        work = base_dir / f"{_BUILD_PREFIX}{recipe.name}-{uuid.uuid4().hex[:8]}"
        work.mkdir(mode=0o700)
        try:
            _build_into(recipe, work, dest, base_dir / "debs", mirror, progress, result)
        finally:
            progress("cleanup", f"removing {work}")
            _remove_workdir(work)
        for old in stale_archives(recipe, cache_dir):
            progress("archive", f"removing archive of an older recipe: {old.name}")
            old.unlink(missing_ok=True)
    return result


def _build_into(
    recipe: BaseRecipe,
    work: Path,
    dest: Path,
    debs: Path,
    mirror: str,
    progress: ProgressCallback,
    result: BuildResult,
) -> None:
    layout, bundle = work / "layout", work / "bundle"
    image = f"{layout}:{recipe.version_tag}"
    rootfs = bundle / "rootfs"
    debs.mkdir(parents=True, exist_ok=True)

    t0 = time.monotonic()
    _run(["umoci", "init", "--layout", str(layout)], what="umoci init")
    _run(["umoci", "new", "--image", image], what="umoci new")
    _run(["umoci", "unpack", "--image", image, str(bundle)], what="umoci unpack")
    _debootstrap(recipe, rootfs, debs, work / "debootstrap.log", mirror, progress)
    result.timings["debootstrap"] = time.monotonic() - t0
    if recipe.security_updates:
        tu = time.monotonic()
        _upgrade(recipe, rootfs, mirror, work / "debootstrap.log", debs, progress)
        result.timings["upgrade"] = time.monotonic() - tu

    t1 = time.monotonic()
    deb_version = _dpkg_version(rootfs, recipe.version_package)
    result.version = upstream_version(deb_version)
    if not (result.version == recipe.version_tag or result.version.startswith(recipe.version_tag + ".")):
        raise RuntimeFailure(
            f"{recipe.suite} now ships {recipe.version_package} {deb_version}, but the {recipe.name!r} "
            f"recipe publishes it as {recipe.version_tag}; update version_tag in faasd.images.base"
        )
    before = _tree_bytes(rootfs)
    report = apply_trim_rules(rootfs, recipe.trim_rules)
    _sanitise(recipe, rootfs)
    result.rootfs_bytes = _tree_bytes(rootfs)
    result.trimmed_bytes = report.removed_bytes
    progress(
        "trim",
        f"removed {report.removed_entries} entries, {report.removed_bytes / 1e6:.1f} MB "
        f"({before / 1e6:.1f} → {result.rootfs_bytes / 1e6:.1f} MB)",
    )
    out = smoke_test(recipe, rootfs)
    progress("check", f"{' '.join(recipe.smoke_test[:1])} works: {out}")
    result.timings["trim"] = time.monotonic() - t1

    t2 = time.monotonic()
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    progress("pack", "umoci repack (gzip layer)")
    _run(
        [
            "umoci",
            "repack",
            "--image",
            image,
            "--history.created_by",
            f"faasd base builder {BUILDER_VERSION}: debootstrap --variant="
            f"{recipe.variant} --include={','.join(recipe.packages)} {recipe.suite}",
            "--history.created",
            created,
            str(bundle),
        ],
        what="umoci repack",
        timeout=900,
    )
    labels = {
        LABEL_NAME: recipe.name,
        LABEL_RECIPE_HASH: recipe.recipe_hash(),
        LABEL_VERSION: result.version,
        LABEL_PREFIX + "builder-version": BUILDER_VERSION,
        LABEL_PREFIX + "suite": recipe.suite,
        LABEL_PREFIX + "packages": ",".join(recipe.packages),
        LABEL_CREATED: created,
        "org.opencontainers.image.title": recipe.repository,
        "org.opencontainers.image.version": result.version,
    }
    cfg = [
        "umoci",
        "config",
        "--image",
        image,
        "--no-history",
        "--created",
        created,
        "--author",
        "faasd",
        "--config.workingdir",
        recipe.working_dir,
    ]
    for e in recipe.image_env:
        cfg += ["--config.env", e]
    for c in recipe.cmd:
        cfg += ["--config.cmd", c]
    for k, v in labels.items():
        cfg += ["--config.label", f"{k}={v}"]
    _run(cfg, what="umoci config")
    _run(["umoci", "gc", "--layout", str(layout)], what="umoci gc")
    result.timings["pack"] = time.monotonic() - t2

    t3 = time.monotonic()
    _write_oci_archive(layout, dest, full_name=recipe.refs[0])
    result.archive_bytes = dest.stat().st_size
    result.timings["archive"] = time.monotonic() - t3
    progress("archive", f"{dest} ({result.archive_bytes / 1e6:.1f} MB)")


# ------------------------------------------------------------------------------------ the store


def _store_settings(store: ImageStore, settings: Settings | None) -> Settings:
    if settings is not None:
        return settings
    found = getattr(store, "settings", None)
    return found if isinstance(found, Settings) else Settings()


def _stored(store: ImageStore, recipe: BaseRecipe) -> Image | None:
    try:
        return store.get(recipe.refs[0])
    except NotFoundError:
        return None


def _import(store: ImageStore, recipe: BaseRecipe, archive: Path, progress: ProgressCallback) -> Image:
    progress("import", f"importing {archive.name} as {', '.join(recipe.refs)}")
    last: list[tuple[str, str]] = []

    def on_import(event: Any) -> None:
        # faasd.images.models.ProgressEvent: report each step once, not every chunk of bytes
        key = (str(getattr(event, "phase", "")), str(getattr(event, "description", event)))
        if last and last[-1] == key:
            return
        last.append(key)
        step, total = getattr(event, "step", None), getattr(event, "total_steps", None)
        counter = f" ({step}/{total})" if step is not None and total else ""
        progress("import", f"{key[0]} {key[1]}{counter}")

    image: Image = store.import_archive(archive, ref=recipe.refs[0], progress=on_import)
    tag = getattr(store, "tag", None)
    for extra in recipe.refs[1:]:
        # the store has no tag() yet: importing the same archive again only adds the ref
        # (blobs and unpacked layers are already there)
        image = tag(image.id, extra) if callable(tag) else store.import_archive(archive, ref=extra)
    return image


def build_base(
    name: str,
    store: ImageStore,
    *,
    settings: Settings | None = None,
    rebuild: bool = False,
    progress: ProgressCallback | None = None,
) -> Image:
    """Build (or reuse the cached archive of) base image ``name`` and import it into ``store``.

    Returns the stored image, tagged ``faasd/<name>:<version>`` and ``faasd/<name>:latest``.
    """
    progress = progress or _noop
    recipe = get_recipe(name)
    cfg = _store_settings(store, settings)
    result = build_archive(recipe, cfg.cache_dir, rebuild=rebuild, progress=_prefixed(progress, name))
    image = _import(store, recipe, result.archive, _prefixed(progress, name))
    _prefixed(progress, name)("done", f"{recipe.refs[0]} = {image.id}")
    return image


def ensure_base_images(
    store: ImageStore,
    names: Sequence[str] = DEFAULT_NAMES,
    *,
    settings: Settings | None = None,
    rebuild: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, Image]:
    """Make sure the store holds the current base images; build only what is missing.

    Fast and side-effect free when every image is present with the current recipe hash.
    """
    progress = progress or _noop
    cfg = _store_settings(store, settings)
    recipes = [get_recipe(n) for n in names]
    images: dict[str, Image] = {}
    for recipe in recipes:
        p = _prefixed(progress, recipe.name)
        current = None if rebuild else _stored(store, recipe)
        state = decide(
            recipe,
            cfg.cache_dir,
            stored_labels=dict(current.config.labels or {}) if current is not None else None,
            stored_refs=current.refs if current is not None else (),
            rebuild=rebuild,
        )
        p("check", f"{state.action}: {state.reason}")
        if state.action == "none" and current is not None:
            images[recipe.name] = current
            continue
        if state.action == "build":
            build_archive(recipe, cfg.cache_dir, rebuild=rebuild, progress=p)
            images[recipe.name] = _import(store, recipe, state.archive, p)
        else:
            try:
                images[recipe.name] = _import(store, recipe, state.archive, p)
            except InvalidInputError as exc:
                # a cached archive damaged after it was written (disk, CI cache restore): rebuild once
                p("import", f"cached archive is unusable ({exc.message}); rebuilding it")
                build_archive(recipe, cfg.cache_dir, rebuild=True, progress=p)
                images[recipe.name] = _import(store, recipe, state.archive, p)
        p("done", f"{recipe.refs[0]} = {images[recipe.name].id}")
    return images


def _prefixed(progress: ProgressCallback, name: str) -> ProgressCallback:
    def cb(phase: str, message: str) -> None:
        progress(phase, f"{name}: {message}")

    return cb


# ---------------------------------------------------------------------------------------- __main__


def _print_progress(stream: IO[str]) -> ProgressCallback:
    start = time.monotonic()

    def cb(phase: str, message: str) -> None:
        print(f"[base {time.monotonic() - start:6.1f}s] {phase:<11} {message}", file=stream, flush=True)

    return cb


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faasd.images.base", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ens = sub.add_parser("ensure", help="build what is missing and import it into the image store")
    bld = sub.add_parser("build", help="build (or reuse) the cached OCI archives only, no store needed")
    hsh = sub.add_parser("hash", help="print '<name> <recipe-hash> <archive>' (e.g. as a CI cache key)")
    for p in (ens, bld, hsh):
        p.add_argument("names", nargs="*", default=list(DEFAULT_NAMES), help="python, node (default: both)")
    for p in (ens, bld):
        p.add_argument("--rebuild", action="store_true", help="ignore the cached archive")
    args = parser.parse_args(argv)
    settings = Settings()
    progress = _print_progress(sys.stdout)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # clean up the build dir on `kill` too
    try:
        recipes = [get_recipe(n) for n in args.names]
        if args.command == "hash":
            for r in recipes:
                print(r.name, r.recipe_hash(), archive_path(r, settings.cache_dir))
        elif args.command == "build":
            for r in recipes:
                t = time.monotonic()
                res = build_archive(
                    r, settings.cache_dir, rebuild=args.rebuild, progress=_prefixed(progress, r.name)
                )
                what = "built" if res.built else "cached"
                progress(
                    "done",
                    f"{r.name}: {what} {res.archive} ({res.archive_bytes / 1e6:.1f} MB) "
                    f"in {time.monotonic() - t:.1f} s",
                )
        else:
            from faasd.images.store import ImageStore

            store = ImageStore(settings)
            images = ensure_base_images(
                store, args.names, settings=settings, rebuild=args.rebuild, progress=progress
            )
            for name, image in images.items():
                print(f"{name}: {', '.join(sorted(image.refs))} {image.id}")
    except KeyboardInterrupt:
        print("interrupted; build directory removed", file=sys.stderr)
        return 130
    except FaasdError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "DEFAULT_NAMES",
    "RECIPES",
    "TRIM_RULES",
    "BaseRecipe",
    "BuildResult",
    "CacheState",
    "TrimReport",
    "TrimRule",
    "apply_trim_rules",
    "archive_path",
    "build_archive",
    "build_base",
    "decide",
    "ensure_base_images",
    "get_recipe",
    "smoke_test",
    "stale_archives",
    "upstream_version",
]
