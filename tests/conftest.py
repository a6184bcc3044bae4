"""Fixtures shared by every test package.

Each test gets its own data/run/cache dirs (unique, removed afterwards), so tests never see each
other's images, sandboxes or databases. Integration tests need root and real runc; they are skipped
with a reason when run unprivileged (CI runs as root, so there they always run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.runtime import SandboxManager
from faasd.snapshots.image_cache import sweep_orphans
from faasd.testing.leaks import sandbox_manager
from faasd.testing.server import private_direct_pool

# The user-facing plugin (faasd_platform fixture ...) is loaded here rather than through its entry point
# ("-p no:faasd" in pyproject), so that coverage is already measuring when faasd is first imported.
pytest_plugins = ("faasd.testing.plugin",)

DEV_ROOTFS_DIR = Path(os.environ.get("FAASD_TEST_ROOTFS_DIR", "/var/lib/faasd-dev"))


FOLDER_MARKERS = ("unit", "integration", "chaos", "security", "stress")
ROOT_MARKERS = ("integration", "chaos", "security", "stress")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    needs_root = pytest.mark.skip(reason="needs root and runc (CI runs these as root)")
    is_root = os.geteuid() == 0 and shutil.which("runc") is not None
    tests_dir = Path(__file__).parent
    for item in items:
        # The folder a test lives in is its default marker (tests/unit -> unit, tests/chaos -> chaos, ...).
        try:
            area = Path(str(item.fspath)).relative_to(tests_dir).parts[0]
        except ValueError:
            area = ""
        # item.keywords also holds every folder name, so only a real marker object tells what is applied
        if area in FOLDER_MARKERS and item.get_closest_marker(area) is None:
            item.add_marker(getattr(pytest.mark, area))
        if not is_root and any(item.get_closest_marker(m) for m in ROOT_MARKERS):
            item.add_marker(needs_root)
        if item.get_closest_marker("stress") and os.environ.get("FAASD_STRESS") != "1":
            item.add_marker(pytest.mark.skip(reason="stress/soak runs only with FAASD_STRESS=1"))


@pytest.fixture
def unique_id() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at private, empty directories (on the root ext4 fs, so overlayfs works)."""
    base = Path(tmp_path_factory.mktemp("faasd"))
    s = Settings(
        data_dir=base / "data",
        run_dir=base / "run",
        cache_dir=Path(os.environ.get("FAASD_TEST_CACHE_DIR", "/var/cache/faasd")),
        auth=False,
        direct_pool=private_direct_pool(),
    )
    for d in (s.data_dir, s.run_dir):
        d.mkdir(parents=True, exist_ok=True)
    yield s
    subprocess.run(["umount", "-R", "-l", str(base)], capture_output=True, check=False)
    shutil.rmtree(s.image_cache_dir, ignore_errors=True)  # snapshots' process images in memory


@pytest.fixture
async def manager(settings: Settings) -> AsyncIterator[SandboxManager]:
    """A SandboxManager over ``settings``; sandboxes a test left open are destroyed on exit."""
    async with sandbox_manager(settings) as m:
        yield m


def _debootstrap(target: Path, include: str) -> None:
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={include}",
            "bookworm",
            str(tmp),
            "http://deb.debian.org/debian",
        ],
        check=True,
        capture_output=True,
    )
    tmp.rename(target)


@pytest.fixture(scope="session")
def python_rootfs() -> Path:
    """A plain Debian bookworm minbase + python3 rootfs directory, built once and cached.

    Lower layers for runtime tests that do not exercise the image store.
    """
    target = DEV_ROOTFS_DIR / "rootfs-python"
    if not (target / "usr/bin/python3").exists():
        if os.geteuid() != 0:
            pytest.skip("building a rootfs needs root")
        DEV_ROOTFS_DIR.mkdir(parents=True, exist_ok=True)
        _debootstrap(target, "python3")
    return target


# scripts/test.sh sets FAASD_NO_SKIPS=1: on a machine with root and runc a skipped test means something set-up
# should have provided is missing (criu, runsc, skopeo, node, PostgreSQL, ...), so the run fails and names it.
_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and os.environ.get("FAASD_NO_SKIPS") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # snapshots' process images in memory (/dev/shm) of this session's data dirs, e.g. of Settings made
    # outside the fixture
    sweep_orphans(under=session.config._tmp_path_factory.getbasetemp())  # type: ignore[attr-defined]
    is_root = os.geteuid() == 0 and shutil.which("runc") is not None
    if _skipped and is_root and exitstatus == 0:
        print(f"\n{len(_skipped)} test(s) skipped on a machine with root and runc (FAASD_NO_SKIPS=1):")
        for line in _skipped:
            print(f"  {line}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
