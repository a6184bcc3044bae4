"""faasd.testing.leaks without real sandboxes: traces it must report, ids it must not look at."""

from __future__ import annotations

import os
import uuid

import pytest

from faasd.config import Settings
from faasd.errors import InvalidInputError
from faasd.runtime import SandboxManager, SandboxSpec
from faasd.testing.leaks import (
    assert_no_leaks,
    find_leaks,
    runc_ids,
    sandbox_leaks,
    sandbox_manager,
    track_sandbox_ids,
)

pytestmark = pytest.mark.unit


def _id() -> str:
    return "fd-unit" + uuid.uuid4().hex[:10]


def test_an_id_that_never_existed_is_clean(settings: Settings) -> None:
    sid = _id()
    assert sandbox_leaks(settings, sid) == []
    assert find_leaks(settings, [sid, _id()]) == {}
    assert find_leaks(settings, []) == {}
    assert_no_leaks(settings, [sid])


def test_a_leftover_bundle_and_runc_state_dir_are_reported(settings: Settings) -> None:
    sid, other = _id(), _id()
    (settings.sandboxes_dir / sid).mkdir(parents=True)
    (settings.runc_root / sid).mkdir(parents=True)
    found = sandbox_leaks(settings, sid)
    assert f"bundle dir {settings.sandboxes_dir / sid}" in found
    assert f"runc state dir {settings.runc_root / sid}" in found
    # only the ids asked about are reported
    assert find_leaks(settings, [sid, other]) == {sid: found}
    with pytest.raises(AssertionError, match=sid):
        assert_no_leaks(settings, [other, sid])


def test_an_empty_id_is_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match="empty sandbox id"):
        find_leaks(settings, [""])


def test_runc_ids_of_an_unused_root_is_empty(settings: Settings) -> None:
    assert runc_ids(settings.runc_root) == set()


@pytest.mark.skipif(os.geteuid() != 0, reason="SandboxManager.cleanup_orphans reads runc state (root)")
async def test_sandbox_manager_records_ids_and_closes(settings: Settings) -> None:
    async with sandbox_manager(settings) as m:
        assert isinstance(m, SandboxManager)
        seen = track_sandbox_ids(m)
        sid = _id()
        with pytest.raises(InvalidInputError):  # no lowers: refused before anything is created
            await m.create(SandboxSpec(id=sid, lowers=[]))
        assert seen == {sid}
    assert sandbox_leaks(settings, sid) == []
