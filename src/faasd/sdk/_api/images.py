"""Registry pulls and pushes of images."""

from __future__ import annotations

import httpx

from faasd.sdk import models as sm
from faasd.sdk._api.calls import API, Call, _model

PULL_TIMEOUT = httpx.Timeout(1800.0, connect=10.0)
"""Pulling or pushing moves whole images over the network."""


def pull_image(ref: str) -> Call[sm.Image]:
    return Call(
        "POST", f"{API}/images/pull", _model(sm.Image), json={"ref": ref}, timeout=PULL_TIMEOUT
    )


def push_image(ref: str, source: str | None) -> Call[sm.PushResult]:
    body = {"ref": ref} if source is None else {"ref": ref, "source": source}
    return Call(
        "POST", f"{API}/images/push", _model(sm.PushResult), json=body, timeout=PULL_TIMEOUT
    )
