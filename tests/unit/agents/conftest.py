"""Run the in-sandbox agents as plain host processes (no container, no root) for unit tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from faasd.runtime.agent_client import AgentClient
from faasd.runtime.agent_files import node_agent_path, python_agent_path


@dataclass
class HostAgent:
    proc: subprocess.Popen[bytes]
    client: AgentClient
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


AgentFactory = Callable[..., "asyncio.Future[HostAgent]"]


@pytest.fixture
async def start_agent(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    """``await start_agent(code, runtime="python"|"node", handler=..., fork=False)`` -> HostAgent."""
    started: list[HostAgent] = []
    counter = [0]

    async def start(
        code: str,
        *,
        runtime: str = "python",
        handler: str | None = None,
        fork: bool = False,
        filename: str | None = None,
        env: dict[str, str] | None = None,
    ) -> HostAgent:
        counter[0] += 1
        n = counter[0]
        code_dir = tmp_path / f"fn{n}"
        code_dir.mkdir()
        sock = tmp_path / f"io{n}" / "agent.sock"
        log = tmp_path / f"agent{n}.log"
        if runtime == "python":
            name = filename or "handler.py"
            argv = [sys.executable, str(python_agent_path())]
            default_handler = f"{Path(name).stem}:handle"
        else:
            node = shutil.which("node")
            if node is None:
                pytest.skip("node is not installed on this host")
            name = filename or "handler.js"
            argv = [node, str(node_agent_path())]
            default_handler = name
        (code_dir / name).write_text(textwrap.dedent(code))
        argv += [
            "--socket",
            str(sock),
            "--handler",
            handler or default_handler,
            "--code-dir",
            str(code_dir),
            "--function-name",
            "unit-fn",
        ]
        if fork:
            argv.append("--fork")
        proc_env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                argv, stdout=fh, stderr=subprocess.STDOUT, env=proc_env, start_new_session=True
            )
        agent = HostAgent(proc, AgentClient(sock), log)
        started.append(agent)

        async def alive() -> bool:
            return proc.poll() is None

        async def death() -> str:
            return agent.output()

        await agent.client.wait_ready(20, alive=alive, describe_death=death)
        return agent

    yield start
    for agent in started:
        if agent.proc.poll() is None:
            os.killpg(agent.proc.pid, signal.SIGKILL)
        agent.proc.wait()
