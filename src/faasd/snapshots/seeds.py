"""Reproducible branches: the PRNG seed of copy ``k`` of a branch started with seed ``s``.

Without a seed every copy restored from one snapshot is reseeded from the kernel (copies differ, as
before). With a seed, copy ``k`` is reseeded from :func:`copy_seed` ``(s, k)``, so a branch can be run
again with identical random streams per copy. A single restore with a seed is copy 0.

The host sends the derived seed (a hex string) to the agent in its ``restored`` frame; what each agent
reseeds is listed in ``src/faasd/agents/PROTOCOL.md``.
"""

from __future__ import annotations

import hashlib

from faasd.errors import InvalidInputError

SEED_MAX = 2**63 - 1
SEED_ENV = "FAASD_SEED"
"""Environment variable carrying a copy's derived seed where no agent reseeds (instances' execs)."""


def check_seed(seed: int | None) -> int | None:
    if seed is not None and not (isinstance(seed, int) and 0 <= seed <= SEED_MAX):
        raise InvalidInputError(f"seed must be an integer between 0 and {SEED_MAX}, got {seed!r}")
    return seed


def copy_seed(seed: int, copy: int) -> str:
    """The seed of copy ``copy`` (0-based) of a branch with ``seed``: 32 hex digits."""
    check_seed(seed)
    if copy < 0:
        raise InvalidInputError(f"copy index must be >= 0, got {copy}")
    return hashlib.sha256(f"faasd-branch-seed:{seed}:{copy}".encode()).hexdigest()[:32]


def copy_seeds(seed: int | None, count: int, *, first: int = 0) -> list[str | None]:
    """Seeds of copies ``first .. first+count-1`` (all None without a seed)."""
    if seed is None:
        return [None] * count
    return [copy_seed(seed, first + k) for k in range(count)]
