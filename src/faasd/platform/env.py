"""Environment variables in request models: one validated type for every request that takes them.

``EnvVars`` is a name → value mapping whose names pass :func:`faasd.runtime.models.check_env_names`
(a bad name is a 422 naming it). ``EnvVarsOrPairs`` also takes the seed platform's shapes
(``[["K", "V"], ...]`` and ``["K=V", ...]``, see :func:`env_pairs`).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

from faasd.runtime.models import check_env_names


def checked_env(env: dict[str, str]) -> dict[str, str]:
    check_env_names(env)
    return env


def env_pairs(value: Any) -> Any:
    """``{"K": "V"}``, ``[["K", "V"], ...]`` (the seed's ``Vec<(String, String)>``) or ``["K=V", ...]``
    (the seed's job arguments) -> ``{"K": "V"}``. Anything else is left for the type check to refuse."""
    if not isinstance(value, list):
        return value
    out: dict[str, str] = {}
    for i, item in enumerate(value):
        if isinstance(item, str):
            key, sep, val = item.partition("=")
            if not sep or not key:
                raise ValueError(f"env_vars[{i}] = {item!r} is not 'KEY=VALUE'")
        elif (
            isinstance(item, list | tuple)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], str)
        ):
            key, val = item[0], item[1]
        else:
            raise ValueError(f"env_vars[{i}] must be 'KEY=VALUE' or a [key, value] pair of strings")
        if key in out:
            raise ValueError(f"env_vars names {key!r} twice")
        out[key] = val
    return out


EnvVars = Annotated[dict[str, str], AfterValidator(checked_env)]
EnvVarsOrPairs = Annotated[dict[str, str], BeforeValidator(env_pairs), AfterValidator(checked_env)]
