"""Base images in the image store: build (or reuse the cached archive) and import, only what is missing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faasd.baseimages.build import build_archive
from faasd.baseimages.cache import decide
from faasd.baseimages.progress import ProgressCallback, _noop, _prefixed
from faasd.baseimages.recipes import DEFAULT_NAMES, BaseRecipe, get_recipe
from faasd.config import Settings
from faasd.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:  # the store imports nothing from here; keep the import lazy to avoid cycles
    from faasd.images.store import Image, ImageStore


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
