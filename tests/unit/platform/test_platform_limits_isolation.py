"""Isolation choice and host-capacity checks: the pure logic behind the 400s (no sandboxes)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from faasd.config import Settings
from faasd.errors import DiskLimitTooLargeError, IsolationUnsupportedError, PidsExhaustedError, pids_exhausted
from faasd.platform.capacity import check_disk_limit, disk_limit_room_mb, free_mb
from faasd.platform.functions import check_gvisor_function, oci_runtime
from faasd.sdk import DiskLimitTooLarge, IsolationUnsupported, PidsExhausted, ResourceLimitExceeded
from faasd.sdk.errors import error_from_response


def test_oci_runtime_of_isolation() -> None:
    assert oci_runtime("gvisor") == "runsc"
    assert oci_runtime("runc") == "runc"


def test_gvisor_functions_accept_python_and_exec_only() -> None:
    check_gvisor_function("exec", "none", "cached")
    check_gvisor_function("exec", "none", "ephemeral")
    check_gvisor_function("python", "none", "cached")
    for runtime, network, mode, field in [
        ("node", "none", "cached", "runtime"),
        ("http", "none", "cached", "runtime"),
        ("exec", "egress", "cached", "network"),
        ("exec", "none", "checkpointed", "mode"),
        ("exec", "none", "branched", "mode"),
    ]:
        with pytest.raises(IsolationUnsupportedError) as info:
            check_gvisor_function(runtime, network, mode)
        assert info.value.code == "isolation_unsupported"
        assert field in info.value.details and "gvisor" in info.value.message.lower()


def test_disk_limit_check_uses_free_space_minus_reserve(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", run_dir=tmp_path / "run", disk_reserve_mb=1024)
    free = free_mb(settings.data_dir)  # the nearest existing parent counts while data_dir is missing
    assert disk_limit_room_mb(settings) == max(0, free - 1024)
    check_disk_limit(settings, 16)
    with pytest.raises(DiskLimitTooLargeError) as info:
        check_disk_limit(settings, free, "the instance")
    err = info.value
    assert err.code == "disk_limit_too_large"
    assert err.details["max_disk_mb"] == free - 1024 and "the instance" in err.message
    settings.disk_reserve_mb = free + 1
    with pytest.raises(DiskLimitTooLargeError):
        check_disk_limit(settings, 16)


def test_pids_exhausted_is_a_typed_resource_limit() -> None:
    err = pids_exhausted(64, "the execution", request_id="rq_1")
    assert isinstance(err, PidsExhaustedError) and err.code == "pids_exhausted"
    assert err.details == {"limit": "pids", "pids": 64, "request_id": "rq_1"}
    assert "64" in err.message


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (422, "pids_exhausted", PidsExhausted),
        (400, "disk_limit_too_large", DiskLimitTooLarge),
        (400, "isolation_unsupported", IsolationUnsupported),
    ],
)
def test_sdk_maps_the_new_error_codes(status: int, code: str, cls: type) -> None:
    resp = httpx.Response(status, json={"error": code, "message": "m", "details": {"limit": "pids"}},
                          request=httpx.Request("POST", "http://x/api/v1/execute"))
    err = error_from_response(resp)
    assert isinstance(err, cls)
    if code == "pids_exhausted":
        assert isinstance(err, ResourceLimitExceeded)
