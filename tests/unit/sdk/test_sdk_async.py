"""``AsyncClient`` shares request building with ``Client``; these check the async plumbing and parity."""

from __future__ import annotations

import inspect
import json

import httpx
import pytest

from faasd.sdk import AsyncClient, Client, NotFound, StreamResult

pytestmark = pytest.mark.unit


def _public(cls: type) -> set[str]:
    return {n for n, _ in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")}


def test_sync_and_async_clients_expose_the_same_methods() -> None:
    assert _public(Client) - {"__enter__"} == _public(AsyncClient)
    for name in _public(Client):
        sync_params = list(inspect.signature(getattr(Client, name)).parameters)
        async_params = list(inspect.signature(getattr(AsyncClient, name)).parameters)
        assert sync_params == async_params, name


async def test_async_deploy_invoke_and_errors() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        await request.aread()
        seen.append(request)
        if request.url.path == "/api/v1/functions":
            return httpx.Response(201, json={**json.loads(request.content), "status": {"replicas": 0}})
        if request.url.path.endswith("/invoke"):
            return httpx.Response(200, content=b"pong", headers={"x-execution-id": "ex_1"})
        return httpx.Response(404, json={"error": "not_found", "message": "no such thing"})

    transport = httpx.MockTransport(handler)
    async with AsyncClient("http://faasd.test", api_key="k", transport=transport) as client:
        fn = await client.deploy("ping", "faasd/python:latest", runtime="python")
        assert fn.name == "ping" and fn.runtime == "python"
        assert (await client.invoke("ping", "x")).text == "pong"
        with pytest.raises(NotFound, match="no such thing"):
            await client.get_execution("ex_missing")
    assert seen[0].headers["authorization"] == "Bearer k"


async def test_async_invoke_async_wait_and_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    polls = iter(["queued", "succeeded"])

    async def no_sleep(delay: float) -> None:
        return None

    monkeypatch.setattr("faasd.sdk.async_client.asyncio.sleep", no_sleep)

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/invoke-async"):
            return httpx.Response(202, json={"execution_id": "ex_2", "status": "queued"})
        if request.url.path.endswith("/invoke-stream"):
            sse = (
                'event: start\ndata: {"execution_id": "ex_3"}\n\nevent: stdout\ndata: hi\n\n'
                'event: result\ndata: {"status": "succeeded", "http_status": 200, "body": "b"}\n\n'
                "event: stdout\ndata: ignored after result\n\n"
            )
            return httpx.Response(200, content=sse.encode(), headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json={"id": "ex_2", "status": next(polls), "result": "r"})

    async with AsyncClient("http://faasd.test", transport=httpx.MockTransport(handler)) as client:
        handle = await client.invoke_async("f", {"a": 1})
        execution = await handle.wait(timeout=5)
        assert execution.succeeded and execution.body == b"r"
        events = [e async for e in client.invoke_stream("f")]
        assert [e.kind for e in events] == ["start", "output", "result"]
        assert isinstance(events[-1], StreamResult) and events[-1].body == b"b"


async def test_async_follow_logs() -> None:
    body = b'{"name": "f", "text": "a"}\n{"name": "f", "text": "b"}\n'

    async with AsyncClient(
        "http://faasd.test", transport=httpx.MockTransport(lambda r: httpx.Response(200, content=body))
    ) as client:
        assert [line.text async for line in client.logs("f", follow=False)] == ["a", "b"]
