"""Which backend a capture belongs to, and the refusal to restore it under the other one."""

from __future__ import annotations

import pytest

from faasd.errors import IsolationUnsupportedError
from faasd.runtime.gvisor_checkpoint import (
    ISOLATION_ANNOTATION,
    check_restore_isolation,
    isolation_of_config,
    isolation_of_runtime,
    runtime_of_isolation,
)


def test_isolation_is_read_from_the_stored_config_annotation() -> None:
    assert isolation_of_config({"annotations": {ISOLATION_ANNOTATION: "gvisor"}}) == "gvisor"
    assert isolation_of_config({"annotations": {"faasd.sandbox.id": "fd-x"}}) == "runc"
    assert isolation_of_config({}) == "runc"  # CRIU captures from before the annotation


def test_runtime_and_isolation_names_map_both_ways() -> None:
    assert isolation_of_runtime("runsc") == "gvisor" and isolation_of_runtime("runc") == "runc"
    assert runtime_of_isolation("gvisor") == "runsc" and runtime_of_isolation("runc") == "runc"


def test_same_or_unspecified_isolation_is_accepted() -> None:
    check_restore_isolation("gvisor", None, "snapshot s")
    check_restore_isolation("gvisor", "gvisor", "snapshot s")
    check_restore_isolation("runc", "runc", "snapshot s")


@pytest.mark.parametrize(
    ("kind", "wanted", "says"),
    [("gvisor", "runc", "gVisor (runsc checkpoint) image"), ("runc", "gvisor", "CRIU process image")],
)
def test_mismatched_isolation_is_refused_naming_why(kind: str, wanted: str, says: str) -> None:
    with pytest.raises(IsolationUnsupportedError) as info:
        check_restore_isolation(kind, wanted, "snapshot s")
    assert says in info.value.message and f"isolation '{kind}'" in info.value.message
    assert info.value.code == "isolation_unsupported"
