"""The baseline of ``warm_invoke.py``: a bare Starlette hello endpoint served by uvicorn.

Started as ``python -m uvicorn hello_app:app --app-dir bench --port P`` (one worker process, like the
daemon). Same request shape as a faasd invoke: ``POST /hello`` with a small body, answer ``hello``.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def hello(request: Request) -> PlainTextResponse:
    await request.body()
    return PlainTextResponse("hello")


app = Starlette(routes=[Route("/hello", hello, methods=["GET", "POST"])])
