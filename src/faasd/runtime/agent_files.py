"""Where the in-sandbox agents live on the host, and the mounts and command lines a worker needs.

* ``faasd/agents/`` (package data) is bind-mounted read-only at ``/faasd/agent`` in every agent
  sandbox: ``/faasd/agent/python/agent.py``, ``/faasd/agent/node/agent.js``.
* ``faasd-init`` (``agents/init/faasd-init.c``) is compiled on first use with ``gcc -static -Os``
  into ``cache_dir/bin/init-<source hash>/`` and that directory is bind-mounted read-only at
  ``/faasd/bin``: a static PID 1 that works in any image, even one without a libc.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from faasd.config import Settings
from faasd.errors import RuntimeFailure
from faasd.runtime.models import AGENT_DIR_IN_CONTAINER, IO_DIR_IN_CONTAINER, BindMount

INIT_DIR_IN_CONTAINER = "/faasd/bin"
INIT_IN_CONTAINER = f"{INIT_DIR_IN_CONTAINER}/faasd-init"
AGENT_SOCKET_IN_CONTAINER = f"{IO_DIR_IN_CONTAINER}/agent.sock"
AGENT_SOCKET_NAME = "agent.sock"

_build_lock = threading.Lock()


def agents_dir() -> Path:
    """The host directory holding the agents (``src/faasd/agents`` or the installed package data)."""
    path = Path(__file__).resolve().parent.parent / "agents"
    if not (path / "python" / "agent.py").is_file():
        raise RuntimeFailure(f"faasd agent files are missing from {path}; reinstall faasd")
    return path


def python_agent_path() -> Path:
    return agents_dir() / "python" / "agent.py"


def node_agent_path() -> Path:
    return agents_dir() / "node" / "agent.js"


def init_source_path() -> Path:
    return agents_dir() / "init" / "faasd-init.c"


def agent_mount() -> BindMount:
    """Read-only bind mount of the agents at ``/faasd/agent``."""
    return BindMount(source=agents_dir(), target=AGENT_DIR_IN_CONTAINER, readonly=True)


def python_agent_args(
    handler: str,
    *,
    code_dir: str = "/function",
    function_name: str = "",
    fork: bool = False,
    python: str = "python3",
) -> list[str]:
    args = [
        python,
        f"{AGENT_DIR_IN_CONTAINER}/python/agent.py",
        "--socket",
        AGENT_SOCKET_IN_CONTAINER,
        "--handler",
        handler,
        "--code-dir",
        code_dir,
        "--function-name",
        function_name,
    ]
    if fork:
        args.append("--fork")
    return args


def node_agent_args(
    handler: str, *, code_dir: str = "/function", function_name: str = "", node: str = "node"
) -> list[str]:
    return [
        node,
        f"{AGENT_DIR_IN_CONTAINER}/node/agent.js",
        "--socket",
        AGENT_SOCKET_IN_CONTAINER,
        "--handler",
        handler,
        "--code-dir",
        code_dir,
        "--function-name",
        function_name,
    ]


def init_binary(settings: Settings) -> Path:
    """Path of the compiled ``faasd-init`` for the current source, building it if needed.

    Cached by source hash under ``cache_dir/bin/init-<hash>/faasd-init``; concurrent builders race
    harmlessly (each builds into a temp dir, the first rename wins). Blocking: call it from a thread
    in async code (a build takes well under a second; the cached case is a ``stat``).
    """
    source = init_source_path()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    target_dir = settings.cache_dir / "bin" / f"init-{digest}"
    binary = target_dir / "faasd-init"
    if binary.is_file():
        return binary
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeFailure(
            "exec-mode functions need faasd-init, which is compiled on first use, but gcc is not installed; "
            "install gcc and the static C library (Debian: apt-get install gcc libc6-dev)"
        )
    with _build_lock:
        if binary.is_file():
            return binary
        target_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".init-", dir=target_dir.parent))
        try:
            out = tmp / "faasd-init"
            proc = subprocess.run(
                [gcc, "-static", "-Os", "-s", "-Wall", "-o", str(out), str(source)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if proc.returncode != 0:
                raise RuntimeFailure(
                    f"compiling faasd-init with gcc -static failed: {proc.stderr.strip()[-2000:]}; "
                    "the static C library is needed (Debian: apt-get install libc6-dev)",
                    stderr=proc.stderr,
                )
            os.chmod(out, 0o755)
            os.chmod(tmp, 0o755)
            try:
                os.rename(tmp, target_dir)
            except OSError:
                if not binary.is_file():  # lost the race to a complete build: fine; otherwise re-raise
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return binary


def init_mount(settings: Settings) -> BindMount:
    """Read-only bind mount of the directory holding ``faasd-init`` at ``/faasd/bin``."""
    return BindMount(source=init_binary(settings).parent, target=INIT_DIR_IN_CONTAINER, readonly=True)
