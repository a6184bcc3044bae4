"""Helpers for the snapshot API tests: the stateful handler and the test environment."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from faasd.config import Settings
from faasd.platform.core import Platform

HANDLER = """\
import os, random, time

INIT = {"token": os.urandom(8).hex(), "at": time.time()}
STATE = {"n": 0}


def handle(event, context=None):
    body = event.body.decode() if hasattr(event, "body") else str(event)
    if body.startswith("sleep:"):
        time.sleep(float(body.split(":", 1)[1]))
    if body.startswith("write:"):
        _, name, content = body.split(":", 2)
        with open("/var/tmp/" + name, "w") as f:
            f.write(content)
    STATE["n"] += 1
    return {"n": STATE["n"], "r": random.random(), "init": INIT["token"]}
"""


@dataclass
class SnapEnv:
    platform: Platform
    client: httpx.AsyncClient
    settings: Settings
    image: str
    sandbox_ids: set[str] = field(default_factory=set)
