"""A real daemon pulls and pushes over its API, and pulls missing images for execute, deploy and instances."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.images import ImageStore
from faasd.sdk.errors import NotFound, RegistryError
from faasd.testing.server import FaasdServer
from fixtures import images as tb
from fixtures.registry import Registry, busybox_image, docker_archive

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(registry: Registry) -> Iterator[FaasdServer]:
    env = {"FAASD_REGISTRY_MIRRORS": json.dumps({"docker.io": registry.host})}
    with FaasdServer.start(env=env) as srv:
        yield srv


def _push(reg: Registry, tmp_path: Path, repo_tag: str, marker: str) -> None:
    img = busybox_image(marker, [tb.F("etc/second", f"{repo_tag}\n")])
    reg.skopeo_copy(f"docker-archive:{docker_archive(img, tmp_path / 'img.tar')}", repo_tag)


def _daemon_store(server: FaasdServer) -> ImageStore:
    assert server.data_dir is not None
    return ImageStore(Settings(data_dir=server.data_dir))


def test_api_pull_push_and_on_demand_execute(
    server: FaasdServer, registry: Registry, tmp_path: Path, unique_id: str
) -> None:
    _push(registry, tmp_path, f"api/{unique_id}:v1", f"api {unique_id}")
    with server.client() as c:
        image = c.pull_image(f"{registry.host}/api/{unique_id}:v1")
        assert image.refs == [f"{registry.host}/api/{unique_id}:v1"] and len(image.layers) == 2

        pushed = c.push_image(
            f"{registry.host}/copied/{unique_id}:v2", source=f"{registry.host}/api/{unique_id}:v1"
        )
        assert pushed.digest == image.manifest_digest
        assert sorted(pushed.mounted) == sorted({image.id, *(x.digest for x in image.layers)})

        with pytest.raises(NotFound) as err:
            c.pull_image(f"{registry.host}/api/{unique_id}:missing")
        assert f"api/{unique_id}:missing" in str(err.value)
        with pytest.raises(RegistryError) as err2:
            c.pull_image(f"127.0.0.1:1/x/{unique_id}:v1")
        assert "127.0.0.1:1" in str(err2.value) and err2.value.status == 424

        # Docker naming + the mirror: 'NAME' is docker.io/library/NAME:latest, pulled on first use
        _push(registry, tmp_path, f"library/{unique_id}:latest", f"on demand {unique_id}")
        result = c.execute("cat /etc/marker", image=unique_id)
        assert result.exit_code == 0 and result.stdout == f"on demand {unique_id}"
        assert _daemon_store(server).exists(f"{unique_id}:latest")

        with pytest.raises(NotFound) as err3:
            c.execute("true", image=f"{unique_id}-absent")
        assert f"{unique_id}-absent" in str(err3.value)


def test_deploy_and_instances_pull_missing_images(
    server: FaasdServer, registry: Registry, tmp_path: Path, unique_id: str
) -> None:
    fn_image, inst_image = f"{unique_id}-fn", f"{unique_id}-inst"
    _push(registry, tmp_path, f"library/{fn_image}:v1", "deployed")
    _push(registry, tmp_path, f"library/{inst_image}:v1", "instance")
    store = _daemon_store(server)
    with server.client() as c:
        assert not store.exists(f"{fn_image}:v1")
        c.deploy(f"f{unique_id}", f"{fn_image}:v1", min_replicas=0)
        assert store.exists(f"{fn_image}:v1")
        c.delete_function(f"f{unique_id}")

        inst = c.start_instance(f"{inst_image}:v1")
        try:
            assert store.exists(f"{inst_image}:v1")
            out = c.exec_instance(inst.id, "cat /etc/marker")
            assert out.stdout == "instance"
        finally:
            c.delete_instance(inst.id)


def test_cli_pull_shows_progress_and_errors(registry: Registry, tmp_path: Path, unique_id: str) -> None:
    _push(registry, tmp_path, f"cli/{unique_id}:v1", "cli")
    env = {**os.environ, "FAASD_DATA_DIR": str(tmp_path / "data"), "FAASD_RUN_DIR": str(tmp_path / "run")}
    faas = [sys.executable, "-c", "from faasd.cli.main import app; app(prog_name=\"faas\")"]
    ok = subprocess.run(
        [*faas, "image", "pull", f"{registry.host}/cli/{unique_id}:v1"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert f"pulled {registry.host}/cli/{unique_id}:v1" in ok.stdout
    ls = subprocess.run([*faas, "image", "ls"], env=env, capture_output=True, text=True, check=True)
    assert f"cli/{unique_id}" in ls.stdout
    push = subprocess.run(
        [
            *faas,
            "image",
            "push",
            f"{registry.host}/cli2/{unique_id}:v1",
            "--from",
            f"{registry.host}/cli/{unique_id}:v1",
            "--chunk-size",
            "65536",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert push.returncode == 0, push.stderr
    assert "pushed" in push.stdout
    bad = subprocess.run(
        [*faas, "image", "pull", f"127.0.0.1:1/none/{unique_id}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and "cannot reach registry 127.0.0.1:1" in bad.stderr
    assert "Traceback" not in bad.stderr
