"""Helpers for real-platform tests: the function image, leak checks."""

from __future__ import annotations

from pathlib import Path

from faasd.config import Settings
from faasd.testing.leaks import runc_ids

HANDLER = """\
import json, os, sys, time

def handle(event, context=None):
    body = event.body.decode() if hasattr(event, "body") else str(event)
    print("got", body)
    print("to stderr", file=sys.stderr)
    if body == "boom":
        raise ValueError("boom requested")
    if body == "sleep":
        time.sleep(30)
    if body.startswith("nap"):
        time.sleep(4)
    secret = None
    if os.path.exists("/run/secrets/api-token"):
        secret = open("/run/secrets/api-token").read()
    return {"echo": body, "secret": secret, "env": os.environ.get("GREETING")}
"""


def runc_containers(settings: Settings) -> list[str]:
    return sorted(runc_ids(settings.runc_root))


def assert_no_leaks(settings: Settings) -> None:
    assert runc_containers(settings) == []
    if settings.sandboxes_dir.exists():
        assert list(settings.sandboxes_dir.iterdir()) == []
    mounts = Path("/proc/self/mounts").read_text()
    assert str(settings.run_dir) not in mounts
    assert direct_addresses_left(settings) == []


def direct_addresses_left(settings: Settings) -> list[str]:
    """``lo:faas`` addresses inside this test's private direct pool that are still on ``lo``."""
    import ipaddress

    from faasd.runtime import loaddr

    if not settings.direct_pool:
        return []
    net = ipaddress.IPv4Network(settings.direct_pool)
    return sorted(a for a in loaddr.list_labelled() if ipaddress.IPv4Address(a) in net)


def build_function_image(settings: Settings, ref: str, tmp: Path) -> object:
    from faasd.baseimages import ensure_base_images
    from faasd.images.store import ImageStore

    store = ImageStore(settings)
    ensure_base_images(store, ["python"], settings=settings)
    src = tmp / "src"
    src.mkdir()
    (src / "handler.py").write_text(HANDLER)
    store.add_layer("faasd/python:latest", src, ref=ref)
    return store
