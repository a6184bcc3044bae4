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
recipe change triggers a rebuild.  ``python -m faasd.baseimages ensure`` is what set-up scripts call.

Modules: :mod:`~faasd.baseimages.recipes` (what goes in, the recipe hash), :mod:`~faasd.baseimages.trim`,
:mod:`~faasd.baseimages.debootstrap` (debootstrap + apt upgrade + /etc), :mod:`~faasd.baseimages.smoke`,
:mod:`~faasd.baseimages.build` (umoci, the archive, the build lock), :mod:`~faasd.baseimages.cache` (cached
archives, what to do), :mod:`~faasd.baseimages.ensure` (import into the store), :mod:`~faasd.baseimages.cli`.
This package sits above :mod:`faasd.images` (it imports the store, never the reverse).
"""

from faasd.baseimages.build import BuildResult, build_archive
from faasd.baseimages.cache import CacheState, archive_path, decide, stale_archives
from faasd.baseimages.debootstrap import upstream_version
from faasd.baseimages.ensure import build_base, ensure_base_images
from faasd.baseimages.recipes import DEFAULT_NAMES, LABEL_RECIPE_HASH, RECIPES, BaseRecipe, get_recipe
from faasd.baseimages.smoke import smoke_test
from faasd.baseimages.trim import TRIM_RULES, TrimReport, TrimRule, apply_trim_rules

__all__ = [
    "DEFAULT_NAMES",
    "LABEL_RECIPE_HASH",
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
