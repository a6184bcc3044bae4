"""A real ``faasd`` daemon (real HTTP, platform, image store, runc) for fuzzing, one per module.

It runs without auth, with a small payload limit (so 413 is cheap to reach) and one deployed Python
function ``echo`` so that invocation routes reach real sandboxes, not only 404s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from faasd.config import Settings
from faasd.testing.server import private_direct_pool

MAX_PAYLOAD = 64 * 1024
HANDLER = "def handle(event, context=None):\n    return event.body if hasattr(event, 'body') else event\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FuzzDaemon:
    settings: Settings
    url: str
    log: Path
    proc: subprocess.Popen[bytes]

    def log_tail(self, n: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-n:]


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzDaemon]:
    if os.geteuid() != 0:
        pytest.skip("the daemon needs root (runc)")
    from faasd.baseimages import ensure_base_images
    from faasd.images.store import ImageStore

    base = tmp_path_factory.mktemp("fuzzd")
    settings = Settings(
        data_dir=base / "data",
        run_dir=base / "run",
        cache_dir=Path(os.environ.get("FAASD_TEST_CACHE_DIR", "/var/cache/faasd")),
        auth=False,
        max_payload_bytes=MAX_PAYLOAD,
    )
    settings.data_dir.mkdir(parents=True)
    settings.run_dir.mkdir(parents=True)
    store = ImageStore(settings)
    ensure_base_images(store, ["python"], settings=settings)
    src = base / "src"
    src.mkdir()
    (src / "handler.py").write_text(HANDLER)
    ref = f"fuzz{uuid.uuid4().hex[:8]}:1"
    store.add_layer("faasd/python:latest", src, ref=ref)
    port = _free_port()
    log = base / "daemon.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "faasd.daemon",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-auth",
            "--data-dir",
            str(settings.data_dir),
            "--run-dir",
            str(settings.run_dir),
            "--cache-dir",
            str(settings.cache_dir),
            "--base-images",
            "none",
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "FAASD_MAX_PAYLOAD_BYTES": str(MAX_PAYLOAD),
            "FAASD_LOG_LEVEL": "INFO",
            "FAASD_DIRECT_POOL": private_direct_pool(),  # never a real daemon's lo:faas addresses
        },
    )
    d = FuzzDaemon(settings, f"http://127.0.0.1:{port}", log, proc)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"daemon exited early:\n{d.log_tail()}")
            try:
                if httpx.get(d.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon not healthy:\n{d.log_tail()}")
            time.sleep(0.2)
        r = httpx.post(
            d.url + "/api/v1/functions",
            json={
                "name": "echo",
                "image": ref,
                "runtime": "python",
                "handler": "handler:handle",
                "limits": {"timeout_s": 10},
                "scale": {"min": 0, "max": 2},
            },
            timeout=120,
        )
        assert r.status_code == 201, r.text
        yield d
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        from faasd.runtime.sandbox import SandboxManager

        asyncio.run(SandboxManager(settings).cleanup_orphans())
        subprocess.run(["umount", "-R", "-l", str(base)], capture_output=True, check=False)
