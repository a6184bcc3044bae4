"""User namespace pieces without a kernel: the OCI config, the typed mapping, the CRIU image encoding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from faasd.errors import InvalidInputError
from faasd.runtime.models import SandboxSpec, UserNamespace
from faasd.runtime.spec import ContainerPaths, ProcessUser, build_config
from faasd.runtime.userns import FIRST_HOST_ID, SLOTS, userns_image


def _config(userns: UserNamespace | None) -> dict[str, Any]:
    spec = SandboxSpec(id="fd-unit", lowers=[Path("/nonexistent")], args=["true"])
    netns = None if userns else Path("/run/netns/x")
    paths = ContainerPaths(rootfs=Path("/r"), io_dir=Path("/io"), netns=netns)
    return build_config(spec, paths, ProcessUser(), userns)


def test_config_with_userns_has_user_namespace_mappings_and_a_new_netns() -> None:
    ns = UserNamespace(FIRST_HOST_ID + 3 * 65536)
    cfg = _config(ns)
    types = [n["type"] for n in cfg["linux"]["namespaces"]]
    assert types[0] == "user" and "network" in types
    assert all("path" not in n for n in cfg["linux"]["namespaces"])  # runc makes netns inside the userns
    one = [{"containerID": 0, "hostID": ns.host_id, "size": 65536}]
    assert cfg["linux"]["uidMappings"] == one and cfg["linux"]["gidMappings"] == one
    assert UserNamespace.from_config(cfg) == ns
    sysfs = next(m for m in cfg["mounts"] if m["destination"] == "/sys")
    assert sysfs["type"] == "sysfs"


def test_config_without_userns_is_unchanged() -> None:
    cfg = _config(None)
    assert "uidMappings" not in cfg["linux"]
    assert not any(n["type"] == "user" for n in cfg["linux"]["namespaces"])
    assert UserNamespace.from_config(cfg) is None


def test_bind_sources_replace_mount_sources() -> None:
    spec = SandboxSpec(id="fd-unit", lowers=[Path("/nonexistent")], args=["true"])
    paths = ContainerPaths(rootfs=Path("/r"), io_dir=Path("/io"), netns=None,
                           bind_sources={"/run/faasd-io": Path("/staged/binds/0")})
    cfg = build_config(spec, paths, ProcessUser(), UserNamespace(FIRST_HOST_ID))
    io = next(m for m in cfg["mounts"] if m["destination"] == "/run/faasd-io")
    assert io["source"] == "/staged/binds/0"


def test_host_uid_stays_inside_the_range() -> None:
    ns = UserNamespace(FIRST_HOST_ID)
    assert ns.host_uid(0) == FIRST_HOST_ID and ns.host_uid(65535) == FIRST_HOST_ID + 65535
    with pytest.raises(InvalidInputError):
        ns.host_uid(65536)


def test_every_slot_lies_between_2_30_and_2_31() -> None:
    assert FIRST_HOST_ID == 1 << 30
    assert FIRST_HOST_ID + SLOTS * 65536 <= 1 << 31


def test_criu_userns_image_encoding() -> None:
    # what CRIU 4.2 wrote for a sandbox with host_id 1132724224 (protobuf userns_entry)
    dumped = bytes.fromhex("0a0c0800108080909c0418808004120c0800108080909c0418808004")
    assert userns_image(UserNamespace(1132724224)) == dumped
    assert userns_image(UserNamespace(1132789760)) != dumped
