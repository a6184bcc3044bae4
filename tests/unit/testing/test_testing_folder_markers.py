"""The folder a test lives in is its marker: ``-m unit`` selects every test under tests/unit."""

from __future__ import annotations

import pytest


def test_folder_marker_is_a_real_marker(request: pytest.FixtureRequest) -> None:
    # pytest puts folder names into item.keywords by itself; only the conftest hook adds the marker object
    assert request.node.get_closest_marker("unit") is not None
    assert request.node.get_closest_marker("integration") is None
