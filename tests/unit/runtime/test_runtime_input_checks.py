"""Shared input checks: env names, working dirs, the writable layer's backend choice, JSON bodies."""

from __future__ import annotations

from pathlib import Path

import pytest

from faasd.api.errors import loads_json
from faasd.api.instance_models import ExecRequest, StartInstanceRequest
from faasd.errors import InvalidInputError
from faasd.platform.exec_ephemeral import ExecuteRequest
from faasd.platform.functions import FunctionSpec
from faasd.platform.instances import ExecCommand, InstanceSpec
from faasd.rootfs import TMPFS_MAX_MB, choose_backend
from faasd.runtime.models import SandboxSpec, check_env_names, check_working_dir

pytestmark = [pytest.mark.unit]

BAD_ENV_NAMES = ["", "A=B", "=", "A\0B", "1A", "a b", "é"]


@pytest.mark.parametrize("name", BAD_ENV_NAMES)
def test_bad_env_names_are_refused_everywhere(name: str) -> None:
    with pytest.raises(ValueError, match="environment variable name"):
        check_env_names({name: "x"})
    with pytest.raises(ValueError, match="environment variable name"):  # pydantic ValidationError
        ExecuteRequest(command=["true"], env_vars={name: "x"})
    with pytest.raises(ValueError, match="environment variable name"):
        StartInstanceRequest(env={name: "x"})
    with pytest.raises(ValueError, match="environment variable name"):
        ExecRequest(command=["true"], env={name: "x"})
    with pytest.raises(ValueError, match="environment variable name"):
        FunctionSpec(name="f", image="img:1", env={name: "x"})
    with pytest.raises(InvalidInputError, match="environment variable name"):  # the platform's own inputs
        InstanceSpec(env={name: "x"})
    with pytest.raises(InvalidInputError, match="environment variable name"):
        ExecCommand(args=["true"], env={name: "x"})
    with pytest.raises(InvalidInputError, match="environment variable name"):
        SandboxSpec(id="fd-x", lowers=[Path("/")], env={name: "x"}).validate()


def test_good_env_names_pass() -> None:
    check_env_names({"A": "1", "_x9": "", "PATH": "/bin"})
    assert ExecuteRequest(command=["true"], env_vars={"A_1": "x"}).env_vars == {"A_1": "x"}


@pytest.mark.parametrize(
    "wd", ["rel", "", "/a/../b", "/a/./b", "/a//b", "//a", "/a/", "/proc", "/proc/self/fd/7", "/proc/1/root"]
)
def test_bad_working_dirs(wd: str) -> None:
    with pytest.raises(ValueError, match="working dir"):
        check_working_dir(wd)
    with pytest.raises(ValueError, match="working dir"):
        ExecuteRequest(command=["true"], working_dir=wd)
    with pytest.raises(InvalidInputError, match="working dir"):
        SandboxSpec(id="fd-x", lowers=[Path("/")], cwd=wd).validate()


@pytest.mark.parametrize("wd", ["/", "/tmp", "/function/src", "/processes"])
def test_good_working_dirs(wd: str) -> None:
    check_working_dir(wd)


def test_auto_backend_uses_tmpfs_only_when_the_disk_fits_in_memory() -> None:
    assert choose_backend(None) == "none"
    assert choose_backend(512, "auto", 256) == "loop"  # the default limits: a full disk must be ENOSPC
    assert choose_backend(128, "auto", 256) == "tmpfs"
    assert choose_backend(129, "auto", 256) == "loop"
    assert choose_backend(512, "auto", None) == "tmpfs"
    assert choose_backend(TMPFS_MAX_MB + 1, "auto", None) == "loop"
    assert choose_backend(512, "tmpfs", 64) == "tmpfs"  # forced
    assert choose_backend(8, "loop", 4096) == "loop"


def test_loads_json_turns_every_undecodable_body_into_invalid_input() -> None:
    assert loads_json(b'{"a": [1]}') == {"a": [1]}
    assert loads_json(b"") is None
    for raw in (b"{", b"\xff", b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
        with pytest.raises(InvalidInputError):
            loads_json(raw)
