"""Images in a real browser: import an archive (chunked upload, import with progress), see it listed, use
it, remove it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from console_browser import Browser

from faasd.testing.server import FaasdServer
from fixtures.images import build_layered_image
from fixtures.registry import Registry, busybox_image, docker_archive

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_import_and_remove_an_image(
    browser: Browser, faasd_server: FaasdServer, admin_api: httpx.Client, name: str, tmp_path: Path
) -> None:
    img = build_layered_image(tmp_path / "img")
    ref = f"console-test/{name}:v1"
    b = browser
    b.sign_in(faasd_server.api_key or "")
    b.accept_confirms()
    b.go("#/images")
    b.el("[data-test=images]")
    b.el("#import-file").send_keys(str(img.docker_archive))
    b.fill("#import-ref", ref)
    b.click("#import-submit")
    b.el("#import-form [data-test=progress][data-status=done]", timeout=180)
    b.el(f"tr[data-image='{ref}']", timeout=60)
    listed = admin_api.get("/ui/api/images").json()["images"]
    assert any(ref in i["refs"] for i in listed)
    assert not list((faasd_server.data_dir or tmp_path).glob("tmp/console-uploads/*"))  # upload removed
    b.screenshot("images")
    b.click(f"tr[data-image='{ref}'] button[data-action=remove]")
    b.wait(lambda: not b.all(f"tr[data-image='{ref}']"), 60, "the image gone from the list")
    assert not any(ref in i["refs"] for i in admin_api.get("/ui/api/images").json()["images"])


def test_pull_an_image_from_a_registry(
    browser: Browser, faasd_server: FaasdServer, admin_api: httpx.Client, name: str, tmp_path: Path
) -> None:
    """The pull form fetches an image from a real registry on loopback (docker-registry, filled by skopeo);
    a name the registry does not have shows the daemon's error in the form."""
    registry = Registry(auth=False).start()
    try:
        archive = docker_archive(busybox_image(name), tmp_path / "img.tar")
        registry.skopeo_copy(f"docker-archive:{archive}", f"console/{name}:v1")
        ref = f"{registry.host}/console/{name}:v1"
        b = browser
        b.sign_in(faasd_server.api_key or "")
        b.go("#/images")
        b.el("#pull-form")
        b.fill("#pull-ref", f"{registry.host}/console/{name}:missing")
        b.click("#pull-submit")
        b.el("#pull-status[data-status=failed]", timeout=120)
        b.fill("#pull-ref", ref)
        b.click("#pull-submit")
        b.el("#pull-status[data-status=done]", timeout=180)
        b.el(f"tr[data-image='{ref}']", timeout=60)
        listed = admin_api.get("/ui/api/images").json()["images"]
        assert any(ref in i["refs"] for i in listed)
        b.screenshot("images-pull")
        assert admin_api.delete(f"/ui/api/images/{ref}").status_code == 204
    finally:
        registry.stop()
