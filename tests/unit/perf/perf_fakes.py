"""Test doubles and helpers of the execution-record tests in this folder (orchestration logic only: the
database is real SQLite, the workers are fakes)."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncIterator

from faasd.platform.core import Platform
from faasd.platform.functions import FunctionSpec
from faasd.platform.worker_protocol import WorkerConfig
from faasd.runtime.agent_client import InvokeEvent, InvokeRequest, InvokeResult, StreamChunk

_ids = itertools.count(1)


class FakeWorker:
    def __init__(self, gate: asyncio.Event | None) -> None:
        self.id = f"perf-fake-{next(_ids)}"
        self.gate = gate

    @property
    def alive(self) -> bool:
        return True

    async def invoke(self, request: InvokeRequest) -> InvokeResult:
        if self.gate is not None:
            await self.gate.wait()
        out = b"printed\n" if request.body == b"print" else b""
        return InvokeResult(status=200, headers=[], body=b"echo:" + request.body, stdout=out)

    async def invoke_stream(self, request: InvokeRequest) -> AsyncIterator[InvokeEvent]:
        yield StreamChunk("stdout", b"chunk\n")
        yield InvokeResult(status=200, headers=[], body=request.body.upper())

    async def close(self) -> None:
        return None


class FakeFactory:
    def __init__(self) -> None:
        self.gate: asyncio.Event | None = None

    async def start(self, config: WorkerConfig) -> FakeWorker:
        return FakeWorker(self.gate)

    async def cleanup_orphans(self) -> list[str]:
        return []


def raw_rows(plat: Platform, sql: str, *args: object) -> list[tuple[object, ...]]:
    """Read the database file with a separate sqlite3 connection: no session, so no journal flush."""
    path = plat.db.engine.url.database
    assert path
    with sqlite3.connect(path) as conn:
        return list(conn.execute(sql, args))


async def deploy(plat: Platform, name: str = "hello", **kw: object) -> None:
    await plat.deploy(
        FunctionSpec.model_validate(
            {"name": name, "image": "faasd/python:latest", "scale": {"min": 0, "max": 4}, **kw}
        )
    )
