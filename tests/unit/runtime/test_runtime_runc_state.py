"""runc's record of a sandbox restored without runc (``faasd.runtime.runc_state``) and CRIU's command line
(``faasd.runtime.criu_restore.criu_args``).

The data files are real: runc 1.1.5's record and config.json of a sandbox (``source``), and of a copy
``runc restore`` made from its snapshot (``copy``), as faasd wrote and runc kept them (paths shortened)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from faasd.runtime import criu_cli, criu_dump, criu_restore
from faasd.runtime.criu_conf import _yard_name
from faasd.runtime.runc_state import StatePlan, cgroup_writes, plan, record, write_record

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data"
BUNDLE = Path("/var/lib/faasd-t/run/sandboxes/fd-copy")


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name).read_text())
    return data


def _plan(
    new_oci: dict[str, Any] | None = None, source_state: dict[str, Any] | None = None
) -> StatePlan | None:
    return plan(
        source_state or _load("runc-record-source.json"),
        _load("oci-source.json"),
        new_oci or _load("oci-copy.json"),
        BUNDLE,
    )


def test_the_derived_record_is_the_one_runc_restore_writes() -> None:
    p = _plan()
    assert p is not None
    runc = _load("runc-record-copy.json")
    ours, theirs = copy.deepcopy(p.config), copy.deepcopy(runc["config"])
    assert sorted(ours.pop("labels")) == sorted(theirs.pop("labels"))
    assert ours == theirs
    assert p.cgroup_paths == runc["cgroup_paths"]
    assert set(p.namespace_types) == set(runc["namespace_paths"])


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c["process"]["env"].append("EXTRA=1"),
        lambda c: c["linux"]["resources"]["memory"].update(limit=1 << 30),
        lambda c: c["mounts"].append({"destination": "/d", "type": "bind", "source": "/srv", "options": []}),
        lambda c: c.update(hostname="other"),
        lambda c: c["linux"]["seccomp"]["syscalls"].pop(),
    ],
    ids=["env", "memory", "mount", "hostname", "seccomp"],
)
def test_a_config_that_differs_beyond_a_copy_is_left_to_runc(change: Any) -> None:
    new = _load("oci-copy.json")
    change(new)
    assert _plan(new) is None


def test_a_record_with_a_limit_it_cannot_apply_is_left_to_runc() -> None:
    state = _load("runc-record-source.json")
    state["config"]["cgroups"]["blkio_weight"] = 500
    assert _plan(source_state=state) is None
    state = _load("runc-record-source.json")
    state["cgroup_paths"]["pids"] = "/sys/fs/cgroup/pids/elsewhere"
    assert _plan(source_state=state) is None
    state = _load("runc-record-source.json")
    state["id"] = "fd-another"  # a record of another sandbox than the snapshot's config describes
    assert _plan(source_state=state) is None


def test_cgroup_writes_follow_runcs_order() -> None:
    p = _plan()
    assert p is not None
    writes = cgroup_writes(p.config)
    assert writes[0] == ("devices", "devices.deny", "a")
    allowed = [v for c, f, v in writes if f == "devices.allow"]
    assert "c 1:3 rwm" in allowed and "c 136:* rwm" in allowed and "c *:* m" in allowed
    files = [f for _, f, _ in writes if not f.startswith("devices.")]
    assert files == [
        "memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "cpu.shares", "cpu.cfs_period_us",
        "cpu.cfs_quota_us", "pids.max",
    ]
    values = {f: v for _, f, v in writes}
    assert values["memory.limit_in_bytes"] == str(256 << 20) and values["pids.max"] == "256"


def test_external_mounts_are_the_binds_devices_and_dev_null() -> None:
    p = _plan()
    assert p is not None
    mounts = dict(p.bind_mounts)
    assert mounts["/run/faasd-io"] == "/run/faasd-userns/roots/fd-copy/binds/0"
    assert mounts["/dev/null"] == "/dev/null" and mounts["/dev/urandom"] == "/dev/urandom"
    assert "/dev" in p.tmpfs_destinations


def test_the_record_describes_the_restored_init(tmp_path: Path) -> None:
    p = _plan()
    assert p is not None
    state = record("fd-copy", os.getpid(), p)
    stat = Path("/proc/self/stat").read_text()
    assert state["init_process_start"] == int(stat[stat.rindex(")") + 2 :].split()[19])
    assert state["namespace_paths"]["NEWNET"] == f"/proc/{os.getpid()}/ns/net"
    assert len(state["external_descriptors"]) == 3
    assert state["created"].endswith("Z") and len(state["created"].split(".")[1]) == 10
    write_record(tmp_path, state)
    assert json.loads((tmp_path / "state.json").read_text())["id"] == "fd-copy"
    assert oct((tmp_path / "state.json").stat().st_mode & 0o777) == "0o600"
    assert [f.name for f in tmp_path.iterdir()] == ["state.json"]


def test_criu_gets_runcs_options(tmp_path: Path) -> None:
    p = _plan()
    assert p is not None
    images = tmp_path / "images"
    images.mkdir()
    (images / "descriptors.json").write_text(json.dumps(["/dev/null", "pipe:[11]", "pipe:[12]"]))
    kwargs: dict[str, Any] = dict(
        criu_binary="/usr/local/sbin/criu", image_path=images, work_path=tmp_path / "work",
        criu_root=tmp_path / "root", pid_file=tmp_path / "init.pid", cgroup_path="/faasd/fd-copy",
        criu_opts={"tcp_established": True, "file_locks": False},
    )
    args = criu_restore.criu_args(p, **kwargs)
    joined = " ".join(args)
    assert args[:2] == ["/usr/local/sbin/criu", "restore"]
    assert "--inherit-fd fd[1]:pipe:[11]" in joined and "--inherit-fd fd[2]:pipe:[12]" in joined
    assert "fd[0]" not in joined
    assert "--ext-mount-map /run/faasd-io:/run/faasd-userns/roots/fd-copy/binds/0" in joined
    assert "--empty-ns net" in joined and "--restore-detached" in joined
    assert "--tcp-established" in args and "--file-locks" not in args
    assert "--cgroup-root /faasd/fd-copy" in joined and "--cgroup-yard" not in args
    assert "--config /opt/faasd/runtime/criu.conf" in joined
    assert "--action-script" not in args  # no established TCP connection in the image
    (images / "tcp-stream-7.img").write_bytes(b"")
    args = criu_restore.criu_args(p, **kwargs, cgroup_yard=Path("/run/faasd-criu/cgyard"))
    assert args[args.index("--action-script") + 1] == str(criu_restore.LO_UP_SCRIPT)
    assert args[args.index("--cgroup-yard") + 1] == "/run/faasd-criu/cgyard"
    assert os.access(criu_restore.LO_UP_SCRIPT, os.X_OK)


def test_an_image_without_descriptors_is_a_clear_error(tmp_path: Path) -> None:
    p = _plan()
    assert p is not None
    with pytest.raises(Exception, match=r"descriptors\.json"):
        criu_restore.criu_args(
            p, criu_binary="criu", image_path=tmp_path, work_path=tmp_path, criu_root=tmp_path,
            pid_file=tmp_path / "pid", cgroup_path="/faasd/x", criu_opts={},
        )


def test_cgroup_yard_names_are_crius() -> None:
    assert _yard_name("") == "unified"
    assert _yard_name("name=systemd") == "systemd"
    assert _yard_name("cpu,cpuacct") == "cpu,cpuacct"
    assert _yard_name("pids") == "pids"


def test_a_direct_dump_gets_runcs_checkpoint_options(monkeypatch: pytest.MonkeyPatch) -> None:
    record = _load("runc-record-source.json")
    args = criu_dump.criu_args(
        record, criu_binary="criu", image_path=Path("/img"), work_path=Path("/work"),
        criu_opts={"tcp_established": True, "ext_unix_sk": True}, masked_files=["/proc/kcore"],
    )
    joined = " ".join(args)
    assert args[:4] == ["criu", "dump", "--tree", str(record["init_process_pid"])]
    assert f"--root {record['config']['rootfs']}" in joined
    assert f"--freeze-cgroup {record['cgroup_paths']['freezer']}" in joined
    assert "--leave-running" in args and "--empty-ns net" in joined and "--manage-cgroups" in args
    assert "--tcp-established" in args and "--ext-unix-sk" in args and "--file-locks" not in args
    assert "--ext-mount-map /run/faasd-io:/run/faasd-io" in joined
    assert "--ext-mount-map /proc/kcore:/dev/null" in joined
    assert "--ext-mount-map /dev/null:/dev/null" in joined
    assert "--config /opt/faasd/runtime/criu.conf" in joined
    monkeypatch.setattr(criu_cli.cgroups, "is_v2_only", lambda: False)
    monkeypatch.setattr(criu_cli.os, "geteuid", lambda: 0)
    assert criu_dump.eligible(record)
    assert not criu_dump.eligible(None)
    external = copy.deepcopy(record)
    for ns in external["config"]["namespaces"]:
        if ns["type"] == "NEWNET":
            ns["path"] = "/run/netns/x"  # runc hands CRIU an external netns: left to runc
    assert not criu_dump.eligible(external)
    monkeypatch.setattr(criu_cli.cgroups, "is_v2_only", lambda: True)
    assert not criu_dump.eligible(record)
