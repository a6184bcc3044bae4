"""The instance service's typed inputs and the API request models that build them."""

from __future__ import annotations

import dataclasses
import io
import tarfile

import pytest
from pydantic import ValidationError

from faasd.api.instance_models import (
    ExecRequest,
    ExposeRequest,
    StartInstanceRequest,
    UploadFile,
    UploadRequest,
)
from faasd.errors import InvalidInputError
from faasd.platform.instances import (
    DEFAULT_IMAGE,
    ExecCommand,
    InstanceSpec,
    PortSpec,
    UploadedFile,
    files_to_tar,
)


def test_instance_spec_defaults_to_the_python_image_and_needs_a_snapshot_for_a_seed() -> None:
    assert InstanceSpec().image == DEFAULT_IMAGE
    assert InstanceSpec(snapshot_id="snap-1").image is None
    assert InstanceSpec(snapshot_id="snap-1", seed=7).seed == 7
    with pytest.raises(InvalidInputError, match="'seed' needs 'snapshot_id'"):
        InstanceSpec(seed=7)
    renamed = dataclasses.replace(InstanceSpec(image="img:1", memory_mb=64), name="ws")
    assert (renamed.image, renamed.memory_mb, renamed.name) == ("img:1", 64, "ws")


def test_exec_command_refuses_an_empty_command() -> None:
    with pytest.raises(InvalidInputError, match="must not be empty"):
        ExecCommand(args=[])
    assert ExecCommand(args=["true"]).stdin == b""


def test_start_request_builds_the_same_spec() -> None:
    req = StartInstanceRequest(
        snapshot_id="snap-1", name="n", cpu_cores=0.5, memory_mb=128, disk_gb=0.25, pids=64,
        isolation="runc", ttl_s=5.0, env={"A": "1"}, seed=3,
    )
    spec = req.spec()
    assert spec == InstanceSpec(
        image=None, snapshot_id="snap-1", name="n", cpu_cores=0.5, memory_mb=128, disk_gb=0.25, pids=64,
        isolation="runc", ttl_s=5.0, env={"A": "1"}, seed=3,
    )
    assert StartInstanceRequest().spec().image == DEFAULT_IMAGE
    with pytest.raises(ValidationError, match="'seed' needs 'snapshot_id'"):  # a 422 at the API
        StartInstanceRequest(seed=1)


def test_exec_request_builds_a_command() -> None:
    cmd = ExecRequest(command="echo hi", stdin_base64="eA==", env={"B": "2"}, cwd="/tmp", timeout_s=3.0)
    assert cmd.command_spec() == ExecCommand(
        args=["/bin/sh", "-c", "echo hi"], stdin=b"x", env={"B": "2"}, cwd="/tmp", timeout_s=3.0
    )
    assert ExecRequest(command=["ls", "-l"], stdin="in").command_spec().args == ["ls", "-l"]
    assert ExecRequest(command=["ls"], stdin="in").command_spec().stdin == b"in"
    with pytest.raises(InvalidInputError, match="stdin_base64 is not valid base64"):
        ExecRequest(command=["cat"], stdin_base64="***").command_spec()


def test_expose_and_upload_requests() -> None:
    assert ExposeRequest(internal_port=8080, protocol="tcp").spec() == PortSpec(8080, "tcp", None)
    req = UploadRequest(files=[UploadFile(path="a/b.txt", content="aGk=", mode=0o600)])
    assert req.decoded() == [UploadedFile("a/b.txt", b"hi", 0o600)]
    with pytest.raises(InvalidInputError, match="content of 'f' is not valid base64"):
        UploadFile(path="f", content="***").decoded()
    with tarfile.open(fileobj=io.BytesIO(files_to_tar(req.decoded()))) as tar:
        member = tar.getmember("a/b.txt")
        assert member.mode == 0o600
        extracted = tar.extractfile(member)
        assert extracted is not None and extracted.read() == b"hi"
