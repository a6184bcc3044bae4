"""Base-image recipes: what goes into ``faasd/python`` and ``faasd/node``, and the recipe hash."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from faasd.baseimages.trim import TRIM_RULES, TrimRule
from faasd.errors import InvalidInputError

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

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

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
