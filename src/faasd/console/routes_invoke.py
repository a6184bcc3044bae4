"""The console's invoke form: a function (or a restored sandbox) called with exactly the method, path,
headers and body the user typed, answered as JSON (status, headers, body, timings).

The console's own cookie and CSRF header never reach the function: the invocation is built from the
form, not from the console's request."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from faasd.api.invoke import RESPONSE_DROP, function_response
from faasd.console.deps import invoke_scope, platform_of
from faasd.console.routes_images import snapshots_of
from faasd.errors import InvalidInputError
from faasd.platform.executions import encode_body
from faasd.platform.invocation import Invocation
from faasd.platform.keys import KeyInfo
from faasd.runtime.headers import relayable

router = APIRouter(prefix="/ui/api")

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


class InvokeForm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: str = Field(default="POST", pattern="^(" + "|".join(METHODS) + ")$")
    path: str = Field(default="/", max_length=4096)
    headers: dict[str, str] = Field(default_factory=dict)
    body: str = ""

    def invocation(self, limit: int) -> Invocation:
        body = self.body.encode()
        if len(body) > limit:
            raise InvalidInputError(f"the body is larger than the {limit}-byte payload limit")
        path, _, query = self.path.partition("?")
        headers = {k.lower(): v for k, v in self.headers.items()}
        headers.setdefault("content-length", str(len(body)))
        return Invocation(
            body=body,
            headers=headers,
            path=path if path.startswith("/") else "/" + path,
            method=self.method,
            query=query,
        )


def _body(data: bytes) -> dict[str, Any]:
    text, enc = encode_body(data)
    return {"body": text, "body_encoding": enc, "body_bytes": len(data)}


@router.post("/functions/{name}/invoke")
async def invoke_function(
    name: str, form: InvokeForm, request: Request, _k: KeyInfo = invoke_scope
) -> dict[str, Any]:
    p = platform_of(request)
    outcome = await p.executions.invoke(name, form.invocation(p.settings.max_payload_bytes))
    resp = function_response(outcome)
    return {
        "execution_id": outcome.execution_id,
        "status": resp.status_code,
        "outcome": outcome.status,
        "headers": dict(resp.headers),
        **_body(bytes(resp.body)),
        "cold_start": outcome.cold,
        "timings": {
            "init_ms": round(outcome.init_ms, 3),
            "wait_ms": round(outcome.wait_ms, 3),
            "run_ms": round(outcome.run_ms, 3),
            "total_ms": round(outcome.duration_ms, 3),
        },
    }


@router.post("/sandboxes/{sandbox_id}/invoke")
async def invoke_sandbox(
    sandbox_id: str, form: InvokeForm, request: Request, _k: KeyInfo = invoke_scope
) -> dict[str, Any]:
    p = platform_of(request)
    res = await snapshots_of(p).invoke(sandbox_id, form.invocation(p.settings.max_payload_bytes))
    return {
        "sandbox_id": sandbox_id,
        "status": res.http_status if res.error is None else max(res.http_status, 500),
        "headers": dict(relayable(res.headers.items(), RESPONSE_DROP)),
        "error": res.error,
        **_body(res.body),
    }
