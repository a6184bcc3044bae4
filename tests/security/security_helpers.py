"""Helpers for the security suite: attack-script prelude, result parsing, fresh ids for the leak check."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from faasd.runtime import RunResult, SandboxManager, SandboxSpec

# Helpers every attack script starts with: `call` runs a raw syscall/libc function and returns "ok" or the
# errno name; `io` runs a Python callable and returns "ok"/errno name; results go in R, printed as JSON.
PRELUDE = r"""
import ctypes, errno, json, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
R = {}
def call(fn, *args):
    ctypes.set_errno(0)
    rc = fn(*args)
    return "ok" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
def sys_(nr, *args):
    return call(libc.syscall, nr, *args)
def io(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
"""
EPILOGUE = "\nprint('@@RESULT@@' + json.dumps(R), flush=True)\n"


def parse(res: RunResult) -> dict[str, Any]:
    """The JSON dict an attack script printed (fails with the sandbox's output if it printed none)."""
    out = res.stdout.decode(errors="replace")
    for line in out.splitlines():
        if line.startswith("@@RESULT@@"):
            data: dict[str, Any] = json.loads(line[len("@@RESULT@@") :])
            return data
    raise AssertionError(
        f"attack script printed no result (exit {res.exit_code}, oom={res.oom_killed}, "
        f"timed_out={res.timed_out})\nstdout: {out[-2000:]}\n"
        f"stderr: {res.stderr.decode(errors='replace')[-3000:]}"
    )


class Attacks:
    """Creates sandbox specs with fresh ids (remembered for the leak check) and runs attack scripts."""

    def __init__(self, manager: SandboxManager, rootfs: Path) -> None:
        self.manager = manager
        self.rootfs = rootfs
        self.ids: list[str] = []

    def new_id(self) -> str:
        sid = "fd-sec" + uuid.uuid4().hex[:10]
        self.ids.append(sid)
        return sid

    def spec(self, *args: str, **kw: Any) -> SandboxSpec:
        kw.setdefault("id", self.new_id())
        kw.setdefault("lowers", [self.rootfs])
        return SandboxSpec(args=list(args), **kw)

    async def run(self, code: str, *, timeout_s: float = 60, **kw: Any) -> RunResult:
        """Run PRELUDE + code + EPILOGUE with python3 under the default limits (unless overridden)."""
        spec = self.spec("python3", "-c", PRELUDE + code + EPILOGUE, **kw)
        return await self.manager.run(spec, timeout_s=timeout_s)

    async def results(self, code: str, **kw: Any) -> dict[str, Any]:
        res = await self.run(code, **kw)
        assert res.exit_code == 0, (res.exit_code, res.stderr.decode(errors="replace")[-3000:])
        return parse(res)
