"""Helpers for the snapshot API tests: the stateful handler, the test environment, leak checks."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

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


def runc_ids(runc_root: Path) -> list[str]:
    out = subprocess.run(
        ["runc", "--root", str(runc_root), "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0 or out.stdout.strip() in ("", "null"):
        return []
    return [c["id"] for c in json.loads(out.stdout)]


def leaks(settings: Settings, ids: set[str]) -> list[str]:
    found = [f"runc {i}" for i in set(runc_ids(settings.runc_root)) & ids]
    mounts = Path("/proc/self/mounts").read_text()
    for sid in ids:
        if (settings.sandboxes_dir / sid).exists():
            found.append(f"bundle {sid}")
        if Path(f"/run/netns/{sid}").exists():
            found.append(f"netns {sid}")
        if sid in mounts:
            found.append(f"mount {sid}")
    return found
