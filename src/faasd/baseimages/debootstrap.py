"""Populating a base image's rootfs: ``debootstrap``, ``apt-get dist-upgrade`` in a private namespace, the
installed version, and ``/etc`` sanitised of what came from the build host."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import deque
from pathlib import Path

from faasd.baseimages.process import _kill_group, _run
from faasd.baseimages.progress import ProgressCallback
from faasd.baseimages.recipes import (
    _PATH,
    APT_CLEAN,
    DEFAULT_SECURITY_MIRROR,
    DPKG_EXCLUDES,
    HOSTS,
    MIRROR_ENV,
    SOURCES_LIST,
    BaseRecipe,
)
from faasd.errors import RuntimeFailure

_DEBOOTSTRAP_LOG_TAIL = 40
_PER_PACKAGE = re.compile(
    r"I: (Retrieving|Validating|Extracting|Unpacking|Configuring) "
    r"(?!(?:required|base|the|core|additional) )(?!(?:Release|InRelease|Packages)$)\S+"
)


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
