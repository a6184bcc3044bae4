"""Parsing of the kernel's KSM counters (faasd.runtime.ksm)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from faasd.runtime import ksm

pytestmark = pytest.mark.unit


def test_process_stats_of_this_process_parse_yes_no_and_numbers() -> None:
    if not Path(f"/proc/{os.getpid()}/ksm_stat").exists():
        pytest.skip("kernel without /proc/<pid>/ksm_stat")
    stats = ksm.process_stats(os.getpid())
    assert isinstance(stats["ksm_merging_pages"], int)
    assert stats.get("ksm_merge_any") in (True, False)
    assert all(not k.endswith(":") for k in stats)


def test_process_stats_of_a_missing_process_is_empty() -> None:
    assert ksm.process_stats(2**22 + 12345) == {}


def test_saved_bytes_counts_sharing_pages() -> None:
    host = ksm.KsmHost(
        run=1, pages_to_scan=100, sleep_millisecs=20, pages_shared=2, pages_sharing=10, full_scans=1
    )
    assert host.saved_bytes == 10 * os.sysconf("SC_PAGE_SIZE")
