"""System routes: health, info, Prometheus metrics, followed function logs (NDJSON)."""

from __future__ import annotations

from typing import Any

import httpx

from faasd.sdk._api.calls import API, Call, StreamCall, _model
from faasd.sdk._streams import decode_ndjson_line
from faasd.sdk.models import Health, Info, LogLine, convert


def health() -> Call[Health]:
    return Call("GET", "/healthz", _model(Health))


def info() -> Call[Info]:
    return Call("GET", f"{API}/info", _model(Info))


def metrics() -> Call[str]:
    return Call("GET", "/metrics", lambda r: r.text)


class LogFollowDecoder:
    """NDJSON lines of ``/system/logs`` → :class:`LogLine`."""

    def __init__(self) -> None:
        self.done = False

    def feed(self, line: str) -> list[LogLine]:
        obj = decode_ndjson_line(line)
        if obj is None:
            return []
        if "function" not in obj and "name" in obj:
            obj = {**obj, "function": obj["name"]}
        return [convert(obj, LogLine)]

    def end(self) -> list[LogLine]:
        return []


def follow_logs(name: str, tail: int | None, since: str | None, follow: bool) -> StreamCall[LogLine]:
    params: dict[str, Any] = {"name": name, "follow": "true" if follow else "false"}
    if tail is not None:
        params["tail"] = tail
    if since is not None:
        params["since"] = since
    return StreamCall(
        "GET",
        "/system/logs",
        LogFollowDecoder,
        params=params,
        headers={"accept": "application/x-ndjson"},
        timeout=httpx.Timeout(None, connect=10.0),
    )
