"""Parsing of OCI/Docker manifests, indexes and configs."""

from __future__ import annotations

import json

import pytest

from faasd.errors import InvalidInputError
from faasd.images import ImageConfig
from faasd.images import models as m

pytestmark = pytest.mark.unit

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def test_manifest_parses_oci_and_docker_media_types() -> None:
    for mt in (m.MT_OCI_MANIFEST, m.MT_DOCKER_MANIFEST):
        raw = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mt,
                "config": {"mediaType": m.MT_DOCKER_CONFIG, "digest": D1, "size": 10},
                "layers": [
                    {"mediaType": m.MT_DOCKER_LAYER_GZIP, "digest": D2, "size": 5, "annotations": {"x": "y"}}
                ],
            }
        ).encode()
        man = m.parse_model(m.Manifest, raw, "manifest")
        assert man.config.digest == D1 and man.layers[0].size == 5 and man.layers[0].annotations == {"x": "y"}


@pytest.mark.parametrize(
    "raw,match",
    [
        (b"not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"config": {"digest": "sha256:xyz", "size": 1}, "layers": []}', "config.digest"),
        (b'{"config": {"digest": "' + D1.encode() + b'", "size": -1}, "layers": []}', "config.size"),
        (b'{"config": {"digest": "' + D1.encode() + b'", "size": 1}}', "layers"),
    ],
)
def test_manifest_errors(raw: bytes, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        m.parse_model(m.Manifest, raw, "manifest")


def test_oversized_json_refused() -> None:
    with pytest.raises(InvalidInputError, match="allowed"):
        m.parse_json(b" " * (m.MAX_JSON_BYTES + 1), "config")


def test_config_to_image_config() -> None:
    raw = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {
                "Entrypoint": ["/init"],
                "Cmd": "run",
                "Env": ["A=1", "B=x=y"],
                "WorkingDir": "/w",
                "User": "nobody",
                "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
                "Labels": {"a": "b"},
                "StopSignal": "SIGTERM",
                "Healthcheck": {"Test": ["NONE"]},
            },
            "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
        }
    ).encode()
    cfg = m.parse_model(m.ConfigFile, raw, "config")
    ic = ImageConfig.from_container_config(cfg.config)
    assert ic.entrypoint == ["/init"] and ic.cmd == ["run"]
    assert ic.env_dict() == {"A": "1", "B": "x=y"}
    assert ic.exposed_ports == ["53/udp", "80/tcp"] and ic.labels == {"a": "b"}
    assert ic.working_dir == "/w" and ic.user == "nobody" and ic.stop_signal == "SIGTERM"
    assert cfg.rootfs.diff_ids == [D1, D2]
    assert ImageConfig.from_container_config(None) == ImageConfig()
    back = ic.to_oci()
    assert back["ExposedPorts"] == {"53/udp": {}, "80/tcp": {}} and back["Cmd"] == ["run"]


def test_config_requires_valid_diff_ids() -> None:
    with pytest.raises(InvalidInputError, match="diff_id"):
        m.parse_model(m.ConfigFile, b'{"rootfs": {"type": "layers", "diff_ids": ["md5:1"]}}', "config")


def test_image_config_env_validation() -> None:
    with pytest.raises(ValueError):
        ImageConfig(env=["NOVALUE"])


def test_canonical_json_is_stable() -> None:
    assert m.canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == b'{"a":[1,{"c":3,"d":2}],"b":1}'


def test_layer_media_types() -> None:
    assert m.layer_media_type("gzip") == m.MT_OCI_LAYER_GZIP
    assert m.layer_media_type("zstd") == m.MT_OCI_LAYER_ZSTD
    assert m.layer_media_type("none") == m.MT_OCI_LAYER
