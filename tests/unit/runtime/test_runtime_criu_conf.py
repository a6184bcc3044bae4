"""faasd's CRIU settings reach runc through the ``org.criu.config`` annotation."""

from __future__ import annotations

from pathlib import Path

import pytest

from faasd.runtime import SandboxSpec
from faasd.runtime.criu_conf import CRIU_CONFIG, CRIU_CONFIG_ANNOTATION, criu_annotations
from faasd.runtime.restore import rewrite_config
from faasd.runtime.spec import ContainerPaths, ProcessUser, build_config

pytestmark = pytest.mark.unit


def _options(path: Path) -> dict[str, str]:
    opts = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            opts[key] = value.strip()
    return opts


def test_config_file_ships_and_skips_the_network_lock() -> None:
    assert CRIU_CONFIG.is_file()
    assert _options(CRIU_CONFIG) == {"network-lock": "skip"}
    assert criu_annotations() == {CRIU_CONFIG_ANNOTATION: str(CRIU_CONFIG)}


def test_created_sandboxes_carry_the_annotation(tmp_path: Path) -> None:
    spec = SandboxSpec(id="fd-abc", lowers=[tmp_path], args=["true"], annotations={"x": "y"})
    paths = ContainerPaths(
        rootfs=tmp_path / "rootfs", io_dir=tmp_path / "io", netns=Path("/run/netns/fd-abc")
    )
    cfg = build_config(spec, paths, ProcessUser())
    assert cfg["annotations"][CRIU_CONFIG_ANNOTATION] == str(CRIU_CONFIG)
    assert cfg["annotations"]["x"] == "y"


def test_restore_points_at_this_install_config(tmp_path: Path) -> None:
    dumped = {
        "root": {"path": "/run/x/fd-a/rootfs"},
        "linux": {"namespaces": [], "cgroupsPath": "/faasd/fd-a"},
        "annotations": {CRIU_CONFIG_ANNOTATION: "/old/install/criu.conf"},
    }
    out = rewrite_config(
        dumped, old_bundle="/run/x/fd-a", new_bundle=tmp_path, new_id="fd-b", rootfs=tmp_path / "rootfs",
        netns=Path("/run/netns/fd-b"),
    )
    assert out["annotations"][CRIU_CONFIG_ANNOTATION] == str(CRIU_CONFIG)


def test_the_yard_config_is_the_base_one_plus_the_yard() -> None:
    from faasd.runtime.criu_conf import CGROUP_YARD_NAME, CRIU_CONFIG_YARD, KDAT_DIR

    assert _options(CRIU_CONFIG_YARD) == {
        **_options(CRIU_CONFIG), "cgroup-yard": str(KDAT_DIR / CGROUP_YARD_NAME),
    }


def test_dump_stats_reader_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    """``read_dump_stats`` reads CRIU's stats-dump (the integration tests read real ones); anything else,
    missing, truncated or with other magics, gives no figures rather than wrong ones."""
    import struct

    from faasd.runtime.criu_cli import STATS_DUMP, read_dump_stats

    assert read_dump_stats(tmp_path) == {}
    f = tmp_path / STATS_DUMP
    # StatsEntry{dump: DumpStatsEntry{freezing_time: 300, frozen_time: 42000, pages_written: 7}}
    inner = bytes([0x08, 0xAC, 0x02, 0x10, 0x90, 0xC8, 0x02, 0x38, 0x07])
    msg = bytes([0x0A, len(inner)]) + inner
    f.write_bytes(struct.pack("<III", 0x55105940, 0x57093306, len(msg)) + msg)
    assert read_dump_stats(tmp_path) == {"freezing_us": 300, "frozen_us": 42000, "pages_written": 7}
    f.write_bytes(struct.pack("<III", 0x54564319, 0x57093306, len(msg)) + msg)  # another magic
    assert read_dump_stats(tmp_path) == {}
    f.write_bytes(struct.pack("<III", 0x55105940, 0x57093306, len(msg)) + msg[:4])  # cut short
    assert read_dump_stats(tmp_path) == {}
    f.write_bytes(b"\x01")
    assert read_dump_stats(tmp_path) == {}
