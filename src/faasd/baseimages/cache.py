"""Cached base-image archives (``cache_dir/base/<name>-<recipe-hash>.tar``) and what to do about them."""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from faasd.baseimages.recipes import LABEL_RECIPE_HASH, BaseRecipe


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
