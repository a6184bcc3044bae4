"""OCI spec generation, user resolution, runc argument builders, the seccomp profile (no root needed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from faasd.errors import InvalidInputError, ResourceLimitError
from faasd.runtime import BindMount, Limits, NetworkSpec, RunResult, SandboxSpec, raise_for_limits
from faasd.runtime.runc import Runc, Runsc
from faasd.runtime.spec import (
    DEFAULT_CAPS,
    ContainerPaths,
    ProcessUser,
    build_config,
    default_seccomp,
    resolve_user,
)

pytestmark = pytest.mark.unit


@dataclass
class FakeImageConfig:
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] | None = None
    working_dir: str | None = None
    user: str | None = None


def _paths(tmp_path: Path) -> ContainerPaths:
    return ContainerPaths(rootfs=tmp_path / "rootfs", io_dir=tmp_path / "io", netns=Path("/run/netns/fd-x"))


def _spec(tmp_path: Path, **kw: object) -> SandboxSpec:
    base: dict[str, object] = {"id": "fd-abc", "lowers": [tmp_path], "args": ["python3", "-c", "print(1)"]}
    base.update(kw)
    return SandboxSpec(**base)  # type: ignore[arg-type]


def test_namespaces_cgroups_and_limits(tmp_path: Path) -> None:
    spec = _spec(tmp_path, limits=Limits(memory_mb=64, swap_mb=0, cpu_cores=0.5, cpu_shares=512, pids=32))
    cfg = build_config(spec, _paths(tmp_path), ProcessUser())
    ns = {n["type"]: n.get("path") for n in cfg["linux"]["namespaces"]}
    assert set(ns) == {"pid", "ipc", "uts", "mount", "cgroup", "network"}
    assert ns["network"] == "/run/netns/fd-x"
    assert cfg["linux"]["cgroupsPath"] == "/faasd/fd-abc"
    res = cfg["linux"]["resources"]
    assert res["memory"] == {"limit": 64 << 20, "swap": 64 << 20, "disableOOMKiller": False}
    assert res["cpu"] == {"shares": 512, "quota": 50_000, "period": 100_000}
    assert res["pids"] == {"limit": 32}
    assert res["devices"] == [{"allow": False, "access": "rwm"}]


def test_swap_adds_to_memsw(tmp_path: Path) -> None:
    cfg = build_config(
        _spec(tmp_path, limits=Limits(memory_mb=64, swap_mb=16)), _paths(tmp_path), ProcessUser()
    )
    assert cfg["linux"]["resources"]["memory"]["swap"] == 80 << 20


def test_unlimited_resources_are_omitted(tmp_path: Path) -> None:
    cfg = build_config(
        _spec(tmp_path, limits=Limits(memory_mb=None, cpu_cores=None, pids=None)),
        _paths(tmp_path),
        ProcessUser(),
    )
    res = cfg["linux"]["resources"]
    assert "memory" not in res and "pids" not in res and "quota" not in res["cpu"]


def test_process_security_defaults(tmp_path: Path) -> None:
    cfg = build_config(_spec(tmp_path), _paths(tmp_path), ProcessUser())
    proc = cfg["process"]
    assert proc["noNewPrivileges"] is True
    assert "CAP_NET_RAW" not in proc["capabilities"]["bounding"]
    assert "CAP_SYS_ADMIN" not in proc["capabilities"]["effective"]
    assert proc["capabilities"]["bounding"] == DEFAULT_CAPS
    assert proc["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    assert "/proc/kcore" in cfg["linux"]["maskedPaths"]
    assert "/proc/sys" in cfg["linux"]["readonlyPaths"]
    assert cfg["root"] == {"path": str(tmp_path / "rootfs"), "readonly": False}
    mounts = {m["destination"]: m for m in cfg["mounts"]}
    assert "ro" in mounts["/sys"]["options"]
    assert "size=64m" in mounts["/tmp"]["options"]
    assert mounts["/run/faasd-io"]["source"] == str(tmp_path / "io")
    assert "rw" in mounts["/run/faasd-io"]["options"]


def test_non_root_user_has_no_capabilities(tmp_path: Path) -> None:
    cfg = build_config(_spec(tmp_path), _paths(tmp_path), ProcessUser(1000, 1000, (27,), "/home/u"))
    caps = cfg["process"]["capabilities"]
    assert all(caps[k] == [] for k in caps)
    assert cfg["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [27]}
    assert "HOME=/home/u" in cfg["process"]["env"]


def test_bind_mounts_default_read_only_and_reject_duplicates(tmp_path: Path) -> None:
    spec = _spec(tmp_path, mounts=[BindMount(tmp_path, "/faasd/agent"), BindMount(tmp_path, "/data", False)])
    mounts = {m["destination"]: m for m in build_config(spec, _paths(tmp_path), ProcessUser())["mounts"]}
    assert "ro" in mounts["/faasd/agent"]["options"]
    assert "rw" in mounts["/data"]["options"]
    dup = _spec(tmp_path, mounts=[BindMount(tmp_path, "/tmp")])
    with pytest.raises(InvalidInputError, match="two mounts"):
        build_config(dup, _paths(tmp_path), ProcessUser())


def test_image_config_supplies_args_env_cwd_user(tmp_path: Path) -> None:
    ic = FakeImageConfig(
        entrypoint=["/bin/app"], cmd=["--serve"], env=["A=1", "PATH=/x"], working_dir="/srv", user="app"
    )
    spec = SandboxSpec(id="fd-img", lowers=[tmp_path], image_config=ic, env={"A": "2"})
    assert spec.resolved_args() == ["/bin/app", "--serve"]
    assert spec.resolved_env() == ["PATH=/x", "A=2"]
    assert spec.resolved_cwd() == "/srv"
    assert spec.resolved_user() == "app"
    assert SandboxSpec(id="fd-img", lowers=[tmp_path], image_config=ic, user="0").resolved_user() == "0"


@pytest.mark.parametrize("bad", ["abc", "fd-", "fd-UPPER", "fd-" + "x" * 80, "fd-a/b"])
def test_invalid_ids_rejected(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidInputError):
        _spec(tmp_path, id=bad).validate()


def test_invalid_limits_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="memory_mb"):
        _spec(tmp_path, limits=Limits(memory_mb=2)).validate()
    with pytest.raises(InvalidInputError, match="cpu_cores"):
        _spec(tmp_path, limits=Limits(cpu_cores=0)).validate()
    with pytest.raises(InvalidInputError, match="network"):
        _spec(tmp_path, network=NetworkSpec(mode="bridge")).validate()  # type: ignore[arg-type]


def test_seccomp_profile_denies_dangerous_syscalls() -> None:
    prof = default_seccomp()
    assert prof["defaultAction"] == "SCMP_ACT_ALLOW"
    denied = {
        n
        for r in prof["syscalls"]
        if not r.get("args") and r["action"] == "SCMP_ACT_ERRNO"
        for n in r["names"]
    }
    for name in (
        "mount",
        "umount2",
        "ptrace",
        "kexec_load",
        "init_module",
        "finit_module",
        "delete_module",
        "bpf",
        "perf_event_open",
        "keyctl",
        "add_key",
        "request_key",
        "unshare",
        "setns",
        "swapon",
        "swapoff",
        "reboot",
        "open_by_handle_at",
        "name_to_handle_at",
        "userfaultfd",
        "clock_settime",
        "settimeofday",
        "acct",
        "lookup_dcookie",
        "pivot_root",
    ):
        assert name in denied, name
    for needed in ("clone", "fork", "vfork", "execve", "wait4", "socket"):
        assert needed not in denied
    clone_rules = [r for r in prof["syscalls"] if r["names"] == ["clone"]]
    assert clone_rules and all(r["args"][0]["op"] == "SCMP_CMP_MASKED_EQ" for r in clone_rules)
    assert default_seccomp() is not default_seccomp()  # callers may mutate their copy


def _write_db(root: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        "app:x:1000:1000::/home/app:/bin/sh\n"
    )
    (root / "etc/group").write_text("root:x:0:\napp:x:1000:\nwheel:x:10:app,other\nnogroup:x:65534:\n")


def test_resolve_user_forms(tmp_path: Path) -> None:
    _write_db(tmp_path)
    assert resolve_user(tmp_path, None) == ProcessUser(0, 0, (), "/root")
    assert resolve_user(tmp_path, "app") == ProcessUser(1000, 1000, (10,), "/home/app")
    assert resolve_user(tmp_path, "nobody:nogroup") == ProcessUser(65534, 65534, (), "/nonexistent")
    assert resolve_user(tmp_path, "1000") == ProcessUser(1000, 1000, (10,), "/home/app")
    assert resolve_user(tmp_path, "4242:4343") == ProcessUser(4242, 4343, (), "/")
    with pytest.raises(InvalidInputError, match="ghost"):
        resolve_user(tmp_path, "ghost")
    with pytest.raises(InvalidInputError, match="nogrp"):
        resolve_user(tmp_path, "app:nogrp")


def test_runc_argument_builders(tmp_path: Path) -> None:
    r = Runc("runc", tmp_path / "root")
    assert r.global_args(tmp_path / "l.json") == [
        "runc",
        "--root",
        str(tmp_path / "root"),
        "--log",
        str(tmp_path / "l.json"),
        "--log-format",
        "json",
    ]
    assert r.create_args("fd-a", tmp_path, pid_file=tmp_path / "p") == [
        "create",
        "--bundle",
        str(tmp_path),
        "--pid-file",
        str(tmp_path / "p"),
        "fd-a",
    ]
    assert r.exec_args("fd-a", ["ls", "-l"], env={"A": "1"}, cwd="/x", user="1:1") == [
        "exec",
        "--env",
        "A=1",
        "--cwd",
        "/x",
        "--user",
        "1:1",
        "fd-a",
        "ls",
        "-l",
    ]
    assert r.kill_args("fd-a", "TERM", all_processes=True) == ["kill", "--all", "fd-a", "TERM"]
    assert r.delete_args("fd-a", force=True) == ["delete", "--force", "fd-a"]
    assert r.events_args("fd-a", stats=True) == ["events", "--stats", "fd-a"]
    assert r.checkpoint_args(
        "fd-a", tmp_path / "img", leave_running=True, tcp_established=True, manage_cgroups_mode="ignore"
    ) == [
        "checkpoint",
        "--image-path",
        str(tmp_path / "img"),
        "--leave-running",
        "--tcp-established",
        "--manage-cgroups-mode",
        "ignore",
        "fd-a",
    ]
    assert r.restore_args("fd-a", tmp_path, tmp_path / "img", pid_file=tmp_path / "p") == [
        "restore",
        "--bundle",
        str(tmp_path),
        "--image-path",
        str(tmp_path / "img"),
        "--detach",
        "--pid-file",
        str(tmp_path / "p"),
        "fd-a",
    ]


def test_runsc_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    from faasd.errors import RuntimeFailure

    r = Runsc("/nonexistent/runsc", tmp_path)
    with pytest.raises(RuntimeFailure, match="runsc is not installed"):
        r.require()


def test_raise_for_limits_names_the_limit() -> None:
    res = RunResult(137, b"", b"", 10.0, oom_killed=True, memory_limit_mb=64)
    with pytest.raises(ResourceLimitError, match="memory limit of 64 MiB exceeded"):
        res.raise_for_limits()
    with pytest.raises(ResourceLimitError, match="memory limit of 64 MiB exceeded"):
        raise_for_limits(res, Limits(memory_mb=64))
    with pytest.raises(ResourceLimitError, match="timeout of 2 s"):
        raise_for_limits(RunResult(137, b"", b"", 1.0, timed_out=True), Limits(timeout_s=2))
    raise_for_limits(RunResult(0, b"", b"", 1.0), Limits())
