"""Run a real faasd daemon as a subprocess with private directories, for tests.

Used by the pytest plugin, usable on its own::

    with FaasdServer.start() as server:
        client = server.client()
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from faasd.sdk import Client


class PlatformUnavailable(RuntimeError):
    """The platform cannot run here (no root, no runc) or the daemon failed to start; says why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def private_direct_pool() -> str:
    """A random /24 of 127.0.0.0/8 for a test daemon's direct function addresses: never the default
    pool (127.77.0.0/16) of a real daemon on the same host, whose addresses start-up reconciliation would
    otherwise take for stale ones."""
    return f"127.{random.randint(100, 199)}.{random.randint(0, 255)}.0/24"


def remove_direct_addresses(pool: str) -> list[str]:
    """Remove the ``lo:faas`` addresses inside ``pool`` (what a killed test daemon left); returns them."""
    from faasd.runtime import loaddr

    net = ipaddress.IPv4Network(pool)
    left = [a for a in loaddr.list_labelled() if ipaddress.IPv4Address(a) in net]
    for a in left:
        loaddr.remove(a)
    return left


def missing_requirements() -> str | None:
    """Why a local daemon cannot run real sandboxes here, or None when it can."""
    if os.geteuid() != 0:
        return (
            "starting a faasd daemon needs root (runc, overlayfs, cgroups); run as root or set FAAS_URL "
            "to a running daemon"
        )
    runc = os.environ.get("FAASD_RUNC_BINARY", "runc")
    if shutil.which(runc) is None:
        return f"{runc!r} is not on PATH; install runc or set FAAS_URL to a running daemon"
    return None


@dataclass
class FaasdServer:
    """A daemon the tests talk to: either a subprocess we own, or an existing one (``FAAS_URL``)."""

    url: str
    api_key: str | None
    base_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    direct_pool: str | None = None
    """The private direct-address pool of a daemon we started (its leftovers are removed on stop)."""

    @property
    def data_dir(self) -> Path | None:
        return self.base_dir / "data" if self.base_dir else None

    @property
    def run_dir(self) -> Path | None:
        return self.base_dir / "run" if self.base_dir else None

    def client(self, **kwargs: object) -> Client:
        return Client(self.url, api_key=self.api_key, **kwargs)  # type: ignore[arg-type]

    def env(self) -> dict[str, str]:
        """Environment for a ``faas`` subprocess talking to this daemon (and using its image store)."""
        env = {**os.environ, "FAAS_URL": self.url, **self.extra_env}
        if self.api_key:
            env["FAAS_API_KEY"] = self.api_key
        return env

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- lifecycle
    @classmethod
    def connect(cls, url: str, api_key: str | None = None) -> FaasdServer:
        server = cls(url=url.rstrip("/"), api_key=api_key or os.environ.get("FAAS_API_KEY"))
        try:
            server.client().health()
        except Exception as exc:
            raise PlatformUnavailable(f"FAAS_URL={url} does not answer /healthz: {exc}") from exc
        return server

    @classmethod
    def start(
        cls,
        *,
        start_timeout: float = 900.0,
        tmp_root: Path | None = None,
        env: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> FaasdServer:
        """Start ``python -m faasd.daemon`` on a free port with private data/run dirs and wait for it."""
        reason = missing_requirements()
        if reason:
            raise PlatformUnavailable(reason)
        # Short paths: agent sockets live under run_dir and a Unix socket path is limited to 108 bytes.
        base = Path(tempfile.mkdtemp(prefix="fdt-", dir=tmp_root or "/tmp"))
        port = free_port()
        extra = {
            "FAASD_DATA_DIR": str(base / "data"),
            "FAASD_RUN_DIR": str(base / "run"),
            "FAASD_HOST": "127.0.0.1",
            "FAASD_PORT": str(port),
            "FAASD_AUTH": "true" if auth else "false",
            "FAASD_DIRECT_POOL": (env or {}).get("FAASD_DIRECT_POOL", private_direct_pool()),
            # a test daemon leaves nothing behind when it stops (a real one keeps instances running)
            "FAASD_KEEP_SANDBOXES_ON_SHUTDOWN": (env or {}).get("FAASD_KEEP_SANDBOXES_ON_SHUTDOWN", "false"),
        }
        for d in ("data", "run"):
            (base / d).mkdir()
        log_path = base / "daemon.log"
        server = cls(
            url=f"http://127.0.0.1:{port}", api_key=None, base_dir=base, log_path=log_path, extra_env=extra
        )
        server.direct_pool = extra["FAASD_DIRECT_POOL"] or None
        with log_path.open("wb") as log:
            server.process = subprocess.Popen(
                [sys.executable, "-m", "faasd.daemon"],
                env={**os.environ, **(env or {}), **extra},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            server._wait_ready(start_timeout, auth)
        except BaseException:
            tail = server.log_tail()
            server.stop()
            raise PlatformUnavailable(
                f"the faasd daemon did not become ready: see its log:\n{tail}"
            ) from None
        return server

    def _wait_ready(self, timeout: float, auth: bool) -> None:
        assert self.process is not None and self.data_dir is not None
        deadline = time.monotonic() + timeout
        key_file = self.data_dir / "admin.key"
        while True:
            code = self.process.poll()
            if code is not None:
                raise PlatformUnavailable(f"daemon exited with code {code}")
            if time.monotonic() > deadline:
                raise PlatformUnavailable(f"daemon not ready after {timeout:g} s")
            try:
                ok = httpx.get(self.url + "/healthz", timeout=2.0).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok and (not auth or key_file.exists()):
                if auth:
                    self.api_key = key_file.read_text().strip()
                return
            time.sleep(0.2)

    def stop(self, grace_s: float = 30.0) -> list[str]:
        """Stop the daemon (SIGTERM, then SIGKILL) and remove its directories. Idempotent.

        Returns the ids of runc containers the daemon left behind (they are killed and deleted here).
        """
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        base, self.base_dir = self.base_dir, None
        pool, self.direct_pool = self.direct_pool, None
        if pool is not None and proc is not None:  # a daemon killed with SIGKILL cannot clean lo itself
            with contextlib.suppress(Exception):
                remove_direct_addresses(pool)
        leaked: list[str] = []
        if base is not None:
            leaked = remove_containers(base / "run" / "runc")
            subprocess.run(["umount", "-R", "-l", str(base)], capture_output=True, check=False)
            for mount in _mounts_under(base):
                subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
            shutil.rmtree(base, ignore_errors=True)
        return leaked

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def remove_containers(runc_root: Path) -> list[str]:
    """Kill and delete every runc container under ``runc_root``; return their ids."""
    if not runc_root.is_dir():
        return []
    runc = os.environ.get("FAASD_RUNC_BINARY", "runc")
    listed = subprocess.run(
        [runc, "--root", str(runc_root), "list", "-q"], capture_output=True, text=True, check=False
    )
    ids = [line.strip() for line in listed.stdout.splitlines() if line.strip()]
    for cid in ids:
        subprocess.run(
            [runc, "--root", str(runc_root), "kill", cid, "KILL"], capture_output=True, check=False
        )
        subprocess.run(
            [runc, "--root", str(runc_root), "delete", "--force", cid], capture_output=True, check=False
        )
    return ids


def _mounts_under(base: Path) -> list[str]:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    prefix = str(base) + "/"
    points = [line.split()[4] for line in lines if len(line.split()) > 4]
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)
