"""Adoption records (``faasd.runtime.adopt``): the spec survives the round trip, bad records are ignored."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from faasd.config import Settings
from faasd.images.models import ImageConfig
from faasd.runtime import adopt
from faasd.runtime.models import BindMount, Limits, NetworkSpec, SandboxSpec


def _spec(sid: str = "fd-rec1") -> SandboxSpec:
    return SandboxSpec(
        id=sid,
        lowers=[Path("/layers/a"), Path("/layers/b")],
        args=["/faasd/bin/faasd-init"],
        image_config=ImageConfig(entrypoint=["python3"], cmd=["-c", "1"], env=["A=1"], working_dir="/w",
                                 user="1000"),
        env={"K": "v"},
        cwd="/srv",
        limits=Limits(memory_mb=300, disk_mb=700, timeout_s=None, disk_backend="loop"),
        network=NetworkSpec(mode="loopback-proxy", ports=(8000,)),
        mounts=[BindMount(Path("/opt/agent"), "/faasd/agent", True)],
        hostname="in-1",
        annotations={"faasd.instance": "in-1"},
        userns=True,
    )


def test_spec_round_trip_keeps_every_field() -> None:
    spec = _spec()
    back = adopt.spec_from_dict(json.loads(json.dumps(adopt.spec_to_dict(spec))))
    assert back.id == spec.id and back.lowers == spec.lowers and back.args == spec.args
    assert back.limits == spec.limits and back.network == spec.network and back.mounts == spec.mounts
    assert back.env == spec.env and back.cwd == spec.cwd and back.hostname == spec.hostname
    assert back.annotations == spec.annotations and back.userns is True and back.runtime == "runc"
    ic = back.image_config
    assert ic is not None
    assert (ic.entrypoint, ic.cmd, ic.env, ic.working_dir, ic.user) == (["python3"], ["-c", "1"], ["A=1"],
                                                                         "/w", "1000")


def test_write_read_and_find_records(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", run_dir=tmp_path / "r", cache_dir=tmp_path / "c")
    bundle = settings.sandboxes_dir / "fd-rec1"
    bundle.mkdir(parents=True)
    sb = SimpleNamespace(spec=_spec(), bundle=bundle)
    adopt.write_record(sb, "instance", {"instance": "in-1"})  # type: ignore[arg-type]
    (settings.sandboxes_dir / "fd-other").mkdir()  # no record: not adoptable
    manager = SimpleNamespace(sandboxes_dir=settings.sandboxes_dir)
    found = adopt.find_records(manager)  # type: ignore[arg-type]
    assert list(found) == ["fd-rec1"]
    rec = found["fd-rec1"]
    assert rec.owner == "instance" and rec.data == {"instance": "in-1"} and rec.spec.id == "fd-rec1"
    assert adopt.find_records(manager, "restored") == {}  # type: ignore[arg-type]
    assert not list(bundle.glob(".*.tmp"))


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"version": 99, "owner": "instance", "spec": {"id": "fd-rec1"}}),
        json.dumps({"version": 1, "owner": "instance", "spec": {"id": "fd-elsewhere", "lowers": []}}),
        json.dumps({"version": 1, "owner": "instance"}),
    ],
)
def test_bad_records_are_not_adopted(tmp_path: Path, content: str) -> None:
    bundle = tmp_path / "fd-rec1"
    bundle.mkdir()
    (bundle / adopt.RECORD_FILE).write_text(content)
    assert adopt.read_record(bundle) is None
