"""Agent file locations, mounts, command lines and the faasd-init build."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.errors import RuntimeFailure
from faasd.runtime import agent_files

pytestmark = pytest.mark.unit


def _has_interpreter(elf: bytes) -> bool:
    assert elf[:4] == b"\x7fELF" and elf[4] == 2  # ELF64
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return any(struct.unpack_from("<I", elf, phoff + i * phentsize)[0] == 3 for i in range(phnum))


def test_agent_mount_is_read_only_at_faasd_agent() -> None:
    m = agent_files.agent_mount()
    assert m.target == "/faasd/agent" and m.readonly
    assert (m.source / "python" / "agent.py").is_file()
    assert (m.source / "python" / "faasd_runtime.py").is_file()
    assert (m.source / "node" / "agent.js").is_file()
    assert (m.source / "PROTOCOL.md").is_file()


def test_agent_command_lines() -> None:
    py = agent_files.python_agent_args("main:handle", code_dir="/app", function_name="f", fork=True)
    assert py[:2] == ["python3", "/faasd/agent/python/agent.py"]
    assert py[py.index("--socket") + 1] == "/run/faasd-io/agent.sock"
    assert py[py.index("--handler") + 1] == "main:handle"
    assert "--fork" in py
    node = agent_files.node_agent_args("index.js", function_name="f")
    assert node[:2] == ["node", "/faasd/agent/node/agent.js"]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_init_binary_is_built_static_and_cached(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", run_dir=tmp_path / "r", cache_dir=tmp_path / "cache")
    binary = agent_files.init_binary(settings)
    assert binary.parent.parent == settings.cache_dir / "bin"
    assert os.access(binary, os.X_OK)
    assert (
        b"faasd-init 2" in subprocess.run([str(binary), "--version"], capture_output=True, check=True).stdout
    )
    assert not _has_interpreter(binary.read_bytes())  # static: no PT_INTERP (ld.so) program header
    mtime = binary.stat().st_mtime_ns
    t0 = time.monotonic()
    assert agent_files.init_binary(settings) == binary
    assert binary.stat().st_mtime_ns == mtime
    assert time.monotonic() - t0 < 1.0  # cached: no rebuild
    mount = agent_files.init_mount(settings)
    assert mount.target == "/faasd/bin" and mount.source == binary.parent and mount.readonly


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_init_reaps_and_stops_on_sigterm(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", run_dir=tmp_path / "r", cache_dir=tmp_path / "cache")
    binary = agent_files.init_binary(settings)
    proc = subprocess.Popen([str(binary)])
    try:
        time.sleep(0.1)
        assert proc.poll() is None  # sleeps until told to stop
        proc.terminate()
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_missing_gcc_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path / "d", run_dir=tmp_path / "r", cache_dir=tmp_path / "cache")
    monkeypatch.setattr(agent_files.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeFailure, match="gcc is not installed"):
        agent_files.init_binary(settings)


def test_the_python_agent_starts_without_what_only_errors_or_seeds_need() -> None:
    """Every sandbox start pays for what the agent imports: OpenSSL's hashlib (seeded copies only),
    ``typing``, ``urllib.parse`` (query parsing) and ``traceback`` (errors) are imported when first used."""
    agent_dir = str(agent_files.agents_dir() / "python")
    code = (
        f"import sys; sys.path.insert(0, {agent_dir!r}); import faasd_agent; "
        "print(','.join(m for m in ('hashlib', 'typing', 'urllib.parse', 'traceback') if m in sys.modules))"
    )
    out = subprocess.run(
        [shutil.which("python3") or "python3", "-I", "-S", "-c", code], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
