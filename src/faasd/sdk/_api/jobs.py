"""Jobs (the numbered platform jobs, run and polled)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from faasd.sdk import models as sm
from faasd.sdk._api.calls import API, Call, _model, _p


def run_job(type_: int | str, args: Mapping[str, Any]) -> Call[sm.Job]:
    return Call(
        "POST",
        f"{API}/jobs",
        _model(sm.Job),
        json={"type": type_, "args": dict(args)},
        timeout=httpx.Timeout(3600.0 + 60.0, connect=10.0),
    )


def get_job(job_id: str) -> Call[sm.Job]:
    return Call("GET", f"{API}/jobs/{_p(job_id)}", _model(sm.Job))
