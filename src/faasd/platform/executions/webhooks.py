"""Callbacks of async executions: the result POSTed to the caller's ``X-Callback-Url`` (with retries)."""

from __future__ import annotations

import asyncio
import logging

from faasd.state import Execution

log = logging.getLogger(__name__)


async def deliver_callback(ex: Execution, timeout_s: float) -> None:
    """POST the finished execution ``ex`` to its ``callback_url`` (if any); three attempts, backing off
    on connection errors and 5xx answers."""
    if not ex.callback_url:
        return
    headers = {
        "X-Execution-Id": ex.id,
        "X-Call-Id": ex.id,
        "X-Function-Name": ex.function,
        "X-Function-Status": str(ex.http_status if ex.http_status is not None else 500),
        "X-Execution-Status": ex.status,
        "Content-Type": (ex.result_headers or {}).get("content-type", "application/octet-stream"),
    }
    body = ex.result_body if ex.result_body is not None else (ex.error or "").encode()
    delay = 0.5
    import httpx  # only executions with a callback URL need an HTTP client

    async with httpx.AsyncClient(timeout=timeout_s) as client:
        for attempt in range(3):
            try:
                resp = await client.post(ex.callback_url, content=body, headers=headers)
                if resp.status_code < 500:
                    return
                log.warning("callback %s for %s answered %s", ex.callback_url, ex.id, resp.status_code)
            except httpx.HTTPError as exc:
                log.warning(
                    "callback %s for %s failed (attempt %d): %s", ex.callback_url, ex.id, attempt + 1, exc
                )
            await asyncio.sleep(delay)
            delay *= 2
