"""The platform's Prometheus metrics: a pool's gauges as cached children."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from faasd.platform.metrics import Metrics

pytestmark = pytest.mark.unit


def _text(m: Metrics) -> str:
    return generate_latest(m.registry).decode()


def test_pool_gauges_report_each_value_and_follow_changes() -> None:
    m = Metrics()
    m.pool_gauges("hello").update(busy=1, idle=2, queued=3)
    text = _text(m)
    assert 'faasd_pool_workers{function="hello",state="busy"} 1.0' in text
    assert 'faasd_pool_workers{function="hello",state="idle"} 2.0' in text
    assert 'faasd_pool_queue_depth{function="hello"} 3.0' in text
    m.pool_gauges("hello").update(busy=0, idle=2, queued=0)
    text = _text(m)
    assert 'faasd_pool_workers{function="hello",state="busy"} 0.0' in text
    assert 'faasd_pool_queue_depth{function="hello"} 0.0' in text


def test_a_forgotten_function_gets_fresh_gauges_when_it_comes_back() -> None:
    m = Metrics()
    m.pool_gauges("hello").update(busy=1, idle=0, queued=0)
    m.forget_function("hello")
    assert 'function="hello"' not in _text(m)
    # deployed again: its gauges are registered again, not written to the removed children
    m.pool_gauges("hello").update(busy=1, idle=0, queued=0)
    assert 'faasd_pool_workers{function="hello",state="busy"} 1.0' in _text(m)
