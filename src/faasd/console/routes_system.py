"""The snapshot lineage graph and the system page."""

from __future__ import annotations

import asyncio
import platform as host
import subprocess
from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Request

from faasd._version import __version__
from faasd.console.deps import console_of, invoke_scope, platform_of
from faasd.console.routes_live import pools_state, queue_depth
from faasd.platform.functions import BRANCH_FROM_ANNOTATION
from faasd.platform.keys import KeyInfo

router = APIRouter(prefix="/ui/api")


@router.get("/lineage")
async def lineage(request: Request, _k: KeyInfo = invoke_scope) -> dict[str, Any]:
    """Every snapshot (with ``parent``, ``merge.branches``, ``children``, ``in_use_by``) and what uses
    them: restored sandboxes, instances (started on or stopped into a snapshot) and functions
    (``branched`` from one, or checkpointed into them)."""
    p = platform_of(request)
    svc = p.snapshots
    if svc is None:
        return {"available": False, "snapshots": [], "sandboxes": [], "instances": [], "functions": []}

    def views() -> list[dict[str, Any]]:
        heads = svc.list()  # read once for every snapshot's view
        return [svc.view(s, heads) for s in heads]

    snaps = await asyncio.to_thread(views)
    instances = []
    if p.instances is not None:
        for inst in p.instances.list():
            if inst.source_snapshot or inst.fs_snapshot:
                instances.append(
                    {
                        "id": inst.id,
                        "name": inst.name,
                        "status": inst.status,
                        "source_snapshot": inst.source_snapshot,
                        "fs_snapshot": inst.fs_snapshot,
                    }
                )
    functions = []
    for fn in p.functions.list():
        branch_from = (fn.annotations or {}).get(BRANCH_FROM_ANNOTATION)
        if branch_from or any(s["function"] == fn.name for s in snaps):
            functions.append({"name": fn.name, "mode": fn.mode, "branch_from": branch_from})
    return {
        "available": True,
        "snapshots": snaps,
        "sandboxes": [e.to_dict() for e in svc.sandboxes.values()],
        "instances": instances,
        "functions": functions,
    }


@lru_cache(maxsize=8)
def tool_version(binary: str) -> str:
    """First line of ``<binary> --version`` (or why it could not be run)."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({type(exc).__name__})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else f"unknown (exit {out.returncode})"


@router.get("/system")
async def system(request: Request, _k: KeyInfo = invoke_scope) -> dict[str, Any]:
    p = platform_of(request)
    try:
        p.db.ping()
        db = "ok"
    except Exception as exc:
        db = f"unreachable: {exc}"
    s = p.settings
    runc, criu = await asyncio.gather(
        asyncio.to_thread(tool_version, s.runc_binary), asyncio.to_thread(tool_version, s.criu_binary)
    )
    console = console_of(request)
    return {
        "health": {"status": "ok" if db == "ok" else "degraded", "database": db},
        "versions": {
            "faasd": __version__,
            "runc": runc,
            "criu": criu,
            "kernel": host.release(),
            "python": host.python_version(),
        },
        "settings": {
            "auth": s.auth,
            "data_dir": str(s.data_dir),
            "max_payload_bytes": s.max_payload_bytes,
            "database": "postgresql" if (s.database_url or "").startswith("postgres") else "sqlite",
        },
        "features": {
            "snapshots": p.snapshots is not None,
            "instances": p.instances is not None,
            "images": p.images is not None,
            "execute": p.execute is not None,
        },
        "pools": pools_state(p),
        "queue": queue_depth(p),
        "console_sessions": len(console.sessions),
        "operations": [op.to_dict() for op in console.operations.list()[-10:]],
    }
