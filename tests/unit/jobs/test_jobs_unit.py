"""Job type parsing, argument models, upload archive checks, and JobService bookkeeping (fakes)."""

from __future__ import annotations

import io
import tarfile
from types import SimpleNamespace
from typing import Any

import pytest

from faasd.api.instance_models import UploadFile
from faasd.errors import InvalidInputError, NotFoundError
from faasd.platform.instances import UploadedFile, check_tar, files_to_tar
from faasd.platform.jobs import (
    JOB_TYPES,
    ExecuteAdvancedArgs,
    JobService,
    JobValidationError,
    job_dict,
    job_type,
    parse_args,
)
from faasd.state import Database


def test_job_types_by_number_and_name() -> None:
    assert len(JOB_TYPES) == 12
    assert job_type(0) == (0, "execute_function")
    assert job_type("11") == (11, "upload_files")
    assert job_type("merge_branches") == (5, "merge_branches")
    for bad in (12, -1, "nope", True):
        with pytest.raises(InvalidInputError):
            job_type(bad)  # type: ignore[arg-type]


def test_argument_errors_name_the_fields() -> None:
    with pytest.raises(JobValidationError) as e:
        parse_args("start_instance", {"memory_mb": 1, "extra": 2})
    locs = [err["loc"] for err in e.value.details["errors"]]
    assert ["args", "memory_mb"] in locs and ["args", "extra"] in locs
    assert e.value.code == "validation_error"  # HTTP 422: tests/unit/api/test_api_error_statuses.py
    with pytest.raises(JobValidationError):
        parse_args("expose_port", {"instance_id": "in-1", "internal_port": 70000})
    with pytest.raises(JobValidationError):
        parse_args("merge_branches", {"branch_ids": ["only-one"]})
    with pytest.raises(JobValidationError):
        parse_args("merge_branches", {"branch_ids": [f"snap-{i}" for i in range(33)]})


def test_restore_and_branch_jobs_take_an_optional_seed() -> None:
    assert parse_args("restore_snapshot", {"snapshot_id": "snap-1"}).seed is None  # type: ignore[attr-defined]
    args = parse_args("create_branch", {"parent_snapshot_id": "snap-1", "branch_name": "b", "seed": 3})
    assert args.seed == 3  # type: ignore[attr-defined]
    for bad in (-1, 2**63, "x", 1.5):
        with pytest.raises(JobValidationError) as e:
            parse_args("restore_snapshot", {"snapshot_id": "snap-1", "seed": bad})
        assert e.value.details["errors"][0]["loc"] == ["args", "seed"]


def test_execute_advanced_modes() -> None:
    a = ExecuteAdvancedArgs(command="true", branch_from="snap-1")
    assert a.mode == "restore" and a.snapshot == "snap-1"
    with pytest.raises(ValueError):
        ExecuteAdvancedArgs(command="true", mode="restore")
    with pytest.raises(ValueError):
        ExecuteAdvancedArgs(command="true", checkpoint_id="a", branch_from="b")


def _tar(*members: tarfile.TarInfo) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type = kind
    m.linkname = link
    if kind == tarfile.REGTYPE:
        m.size = 1
    return m


def test_check_tar_accepts_normal_archives() -> None:
    ok = _tar(
        _member("./a/"),
        _member("a/b.txt"),
        _member("a/link", tarfile.SYMTYPE, "b.txt"),
        _member("a/up", tarfile.SYMTYPE, "../a/b.txt"),
        _member("hard", tarfile.LNKTYPE, "a/b.txt"),
    )
    assert check_tar(ok) == 5
    assert check_tar(files_to_tar([UploadedFile.from_base64("x/y", "eA==")])) == 1


@pytest.mark.parametrize(
    "members",
    [
        [_member("../x")],
        [_member("a/../../x")],
        [_member("/etc/passwd")],
        [_member("l", tarfile.SYMTYPE, "/etc")],
        [_member("l", tarfile.SYMTYPE, "../..")],
        [_member("a/l", tarfile.SYMTYPE, "../../x")],
        [_member("l", tarfile.SYMTYPE, "sub"), _member("l/x")],
        [_member("h", tarfile.LNKTYPE, "../x")],
        [_member("d", tarfile.CHRTYPE)],
        [_member("f", tarfile.FIFOTYPE)],
    ],
)
def test_check_tar_rejects_escapes(members: list[tarfile.TarInfo]) -> None:
    with pytest.raises(InvalidInputError):
        check_tar(_tar(*members))


def test_check_tar_rejects_garbage_and_bad_base64() -> None:
    with pytest.raises(InvalidInputError):
        check_tar(b"definitely not a tar archive" * 30)
    with pytest.raises(InvalidInputError):
        UploadFile(path="f", content="***").decoded()
    with pytest.raises(InvalidInputError):
        UploadedFile.from_base64("f", "***")
    with pytest.raises(InvalidInputError):
        files_to_tar([UploadFile(path="../f", content="eA==").decoded()])


class _FakeInstances:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def pause(self, instance_id: str) -> Any:
        self.calls.append(("pause", instance_id))
        if instance_id == "missing":
            raise NotFoundError("instance 'missing' does not exist")
        return SimpleNamespace(
            id=instance_id,
            namespace="openfaas-fn",
            name=None,
            image="img",
            source_snapshot=None,
            fs_snapshot=None,
            status="paused",
            auto_paused=False,
            sandbox_id="fd-i1",
            cpu_cores=1.0,
            memory_mb=256,
            disk_gb=1.0,
            pids=4096,
            isolation="runc",
            ttl_s=None,
            env={},
            ports=[],
            error=None,
            created_at=None,
            updated_at=None,
            last_active_at=None,
        )


async def test_job_service_records_success_and_failure(tmp_path: Any) -> None:
    db = Database(f"sqlite:///{tmp_path}/t.db")
    import faasd.state.instance_models  # noqa: F401  (registers the tables)

    db.create_all()
    fake = _FakeInstances()
    tenancy = SimpleNamespace(namespace_of=lambda ref: None if ref == "missing" else "openfaas-fn")
    svc = JobService(SimpleNamespace(db=db, instances=fake, execute=None, tenancy=tenancy))  # type: ignore[arg-type]
    job = await svc.run(8, {"instance_id": "in-1"})
    assert job.status == "succeeded" and job.result is not None and job.result["status"] == "paused"
    assert fake.calls == [("pause", "in-1")]
    with pytest.raises(NotFoundError):
        await svc.run("pause_instance", {"instance_id": "missing"})
    with pytest.raises(NotFoundError):  # another namespace's instance is answered as absent
        await svc.run("pause_instance", {"instance_id": "in-1"}, namespace="team-b")
    assert fake.calls == [("pause", "in-1")]
    jobs = svc.list()
    failed = [j for j in jobs if j.status == "failed"]
    assert len(failed) == 2 and all(j.error is not None and j.error["error"] == "not_found" for j in failed)
    assert [j.id for j in svc.list(namespace="team-b")] == [j.id for j in failed if j.namespace == "team-b"]
    assert job_dict(svc.get(job.id))["type_name"] == "pause_instance"
    with pytest.raises(JobValidationError):
        await svc.run(8, {})
    assert len(svc.list()) == 3  # invalid arguments are not recorded
    with pytest.raises(Exception) as e:
        await svc.run(0, {"command": "true"})
    assert getattr(e.value, "code", None) == "unavailable"
    db.dispose()


def test_recorded_args_drop_upload_contents() -> None:
    from faasd.platform.job_args import recorded_args

    args = {"instance_id": "in-1", "files_data": [{"path": "a", "content": "eA=="}]}
    assert recorded_args(args)["files_data"] == [{"path": "a", "content": "<4 base64 chars>"}]
    assert args["files_data"][0]["content"] == "eA=="  # the caller's dict is untouched
    assert recorded_args({"instance_id": "x"}) == {"instance_id": "x"}
