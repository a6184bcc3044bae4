"""Pure parts of faasd.runtime.checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from faasd.errors import ConflictError, RuntimeFailure, StorageFullError
from faasd.runtime.checkpoint import CheckpointSource, checkpoint
from faasd.runtime.restore import rewrite_config
from faasd.runtime.runc import OciRuntime

pytestmark = pytest.mark.unit


def test_restore_config_rewrite_paths(tmp_path: Path) -> None:
    cfg = {
        "root": {"path": "/run/x/fd-a/rootfs"},
        "linux": {"namespaces": [{"type": "network", "path": "/a"}], "cgroupsPath": "/faasd/fd-a"},
        "mounts": [
            {"type": "bind", "source": "/run/x/fd-a/io", "destination": "/run/faasd-io"},
            {"type": "bind", "source": "/opt/agent", "destination": "/faasd/agent"},
        ],
    }
    out = rewrite_config(
        cfg,
        old_bundle="/run/x/fd-a",
        new_bundle=Path("/run/x/fd-b"),
        new_id="fd-b",
        rootfs=Path("/run/x/fd-b/rootfs"),
        netns=Path("/run/netns/fd-b"),
    )
    assert out["root"]["path"] == "/run/x/fd-b/rootfs"
    assert out["linux"]["cgroupsPath"] == "/faasd/fd-b"
    assert out["linux"]["namespaces"] == [{"type": "network", "path": "/run/netns/fd-b"}]
    assert [m["source"] for m in out["mounts"]] == ["/run/x/fd-b/io", "/opt/agent"]
    assert json.dumps(cfg).count("fd-a") == 3  # input untouched


# ---------------------------------------------------------------- checkpoint orchestration (runc double)
class FakeRunc(OciRuntime):
    """Records calls; ``checkpoint`` fails with the given runc error text (or succeeds)."""

    name = "runc"

    def __init__(self, status: str = "running", fail: str | None = None) -> None:
        super().__init__("runc", Path("/nonexistent"))
        self.calls: list[str] = []
        self.status = status
        self.fail = fail

    async def state(self, container_id: str) -> dict[str, Any]:
        return {"status": self.status}

    async def pause(self, container_id: str) -> None:
        self.calls.append("pause")

    async def resume(self, container_id: str) -> None:
        self.calls.append("resume")

    async def checkpoint(self, container_id: str, image_path: Path, **opts: Any) -> None:
        self.calls.append("checkpoint:" + ",".join(sorted(k for k, v in opts.items() if v is True)))
        if self.fail is not None:
            raise RuntimeFailure(f"runc checkpoint failed (exit 1): {self.fail}")
        (image_path / "pages-1.img").write_bytes(b"pages")


def _source(tmp_path: Path, runtime: OciRuntime) -> CheckpointSource:
    bundle = tmp_path / "bundle"
    (bundle / "upper" / "etc").mkdir(parents=True)
    (bundle / "upper" / "etc" / "f").write_text("x")
    (bundle / "config.json").write_text("{}")
    return CheckpointSource(id="fd-x", bundle=bundle, upper=bundle / "upper", runtime=runtime,
                            lowers=[tmp_path])


async def test_checkpoint_freezes_dumps_copies_thaws(tmp_path: Path) -> None:
    rt = FakeRunc()
    cp = await checkpoint(_source(tmp_path, rt), tmp_path / "dest")
    assert rt.calls == ["pause", "checkpoint:ext_unix_sk,file_locks,leave_running,tcp_established", "resume"]
    assert (cp.upper / "etc" / "f").read_text() == "x" and (cp.criu / "pages-1.img").exists()
    assert (cp.bundle / "config.json").exists() and cp.lowers == [tmp_path]
    assert not list((tmp_path / "bundle").glob("criu-dump-*"))


async def test_checkpoint_of_paused_sandbox_stays_paused(tmp_path: Path) -> None:
    rt = FakeRunc(status="paused")
    await checkpoint(_source(tmp_path, rt), tmp_path / "dest")
    assert "pause" not in rt.calls and "resume" not in rt.calls


@pytest.mark.parametrize(("fail", "error"), [("criu failed: No space left on device", StorageFullError),
                                             ("criu failed: type NOTIFY errno 0", RuntimeFailure)])
async def test_checkpoint_failure_thaws_and_cleans(tmp_path: Path, fail: str, error: type) -> None:
    rt = FakeRunc(fail=fail)
    with pytest.raises(error):
        await checkpoint(_source(tmp_path, rt), tmp_path / "dest")
    assert rt.calls[0] == "pause" and rt.calls[-1] == "resume"
    assert not (tmp_path / "dest").exists()
    assert not list((tmp_path / "bundle").glob("criu-dump-*"))


async def test_checkpoint_refuses_stopped(tmp_path: Path) -> None:
    rt = FakeRunc(status="stopped")
    with pytest.raises(ConflictError):
        await checkpoint(_source(tmp_path, rt), tmp_path / "dest")
    assert rt.calls == [] and not (tmp_path / "dest").exists()
