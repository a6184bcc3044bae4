"""Smoke test: the trimmed rootfs still runs its runtime (``chroot`` + the recipe's command)."""

from __future__ import annotations

from pathlib import Path

from faasd.baseimages.process import _run
from faasd.baseimages.recipes import _PATH, BaseRecipe
from faasd.errors import RuntimeFailure


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
