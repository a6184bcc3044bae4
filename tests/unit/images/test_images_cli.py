"""The ``faas image`` sub-app against a real local store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from faasd.cli.images import image_app
from faasd.config import Settings
from fixtures import images as tb

pytestmark = [pytest.mark.unit, pytest.mark.skipif(os.geteuid() != 0, reason="overlay layer dirs need root")]


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("FAASD_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("FAASD_RUN_DIR", str(settings.run_dir))
    return settings


def test_import_ls_inspect_rm_gc(env: Settings, tmp_path: Path) -> None:
    runner = CliRunner()
    archive = tb.write_docker_archive(tb.three_layer_image(), tmp_path / "d.tar", tags=["cli/test:1"])
    res = runner.invoke(image_app, ["import", str(archive)])
    assert res.exit_code == 0, res.output
    assert "cli/test:1" in res.output
    res = runner.invoke(image_app, ["ls"])
    assert res.exit_code == 0 and "cli/test:1" in res.output
    res = runner.invoke(image_app, ["inspect", "cli/test:1"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["config"]["entrypoint"] == ["/bin/tool"] and len(data["layer_dirs"]) == 3
    res = runner.invoke(image_app, ["tag", "cli/test:1", "cli/other:2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(image_app, ["rm", data["id"]])
    assert res.exit_code == 1 and "2 refs" in res.output
    assert runner.invoke(image_app, ["rm", "cli/test:1"]).exit_code == 0
    assert runner.invoke(image_app, ["rm", "cli/other:2"]).exit_code == 0
    res = runner.invoke(image_app, ["gc"])
    assert res.exit_code == 0 and "3 layers" in res.output


def test_import_error_is_reported(env: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"\0" * 100)
    res = CliRunner().invoke(image_app, ["import", str(bad)])
    assert res.exit_code == 1 and "error" in res.output
    res = CliRunner().invoke(image_app, ["inspect", "missing:1"])
    assert res.exit_code == 1 and "not found" in res.output


def test_build_base_progress_adapter() -> None:
    """faasd.baseimages reports progress as (phase, message); the bar accepts both that and ProgressEvent."""
    from faasd.cli.images import _Bar, _progress
    from faasd.images import ProgressEvent

    with _progress() as progress:
        bar = _Bar(progress, "x")
        bar("debootstrap", "running")
        bar(ProgressEvent("blob", "layer 1/1", 1, 2, 10, 20))
        task = progress.tasks[0]
        assert task.completed == 10 and task.total == 20
