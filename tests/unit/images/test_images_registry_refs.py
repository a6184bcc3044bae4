"""Reference parsing (Docker's rules), docker config.json credentials, auth challenges, resumable blobs."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from faasd.content import ContentStore
from faasd.content import digest as dg
from faasd.errors import ConflictError, InvalidInputError, RegistryAuthError
from faasd.images.registry.auth import parse_challenge
from faasd.images.registry.client import is_loopback
from faasd.images.registry.credentials import CredentialStore
from faasd.images.registry.reference import parse

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("ref", "registry", "repository", "tag", "digest", "store_ref"),
    [
        ("alpine", "docker.io", "library/alpine", "latest", None, "alpine:latest"),
        ("alpine:3.19", "docker.io", "library/alpine", "3.19", None, "alpine:3.19"),
        ("python:3.11-slim", "docker.io", "library/python", "3.11-slim", None, "python:3.11-slim"),
        ("bitnami/redis", "docker.io", "bitnami/redis", "latest", None, "bitnami/redis:latest"),
        (
            "docker.io/library/node:18-alpine",
            "docker.io",
            "library/node",
            "18-alpine",
            None,
            "node:18-alpine",
        ),
        ("ghcr.io/org/app:v1", "ghcr.io", "org/app", "v1", None, "ghcr.io/org/app:v1"),
        ("localhost/app", "localhost", "app", "latest", None, "localhost/app:latest"),
        ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000", "a/b/c", "t", None, "127.0.0.1:5000/a/b/c:t"),
        (f"alpine@{D}", "docker.io", "library/alpine", None, D, None),
        (f"host:5000/app:v2@{D}", "host:5000", "app", "v2", D, "host:5000/app:v2"),
    ],
)
def test_references_resolve_as_docker_does(
    ref: str, registry: str, repository: str, tag: str | None, digest: str | None, store_ref: str | None
) -> None:
    r = parse(ref)
    assert (r.registry, r.repository, r.tag, r.digest) == (registry, repository, tag, digest)
    assert r.store_ref == store_ref
    assert r.reference == (digest or tag)


@pytest.mark.parametrize(
    "bad",
    ["", "UPPER/case", "a b", "alpine:", "alpine:-x", "alpine@sha256:12", "host:5000/", "a//b", " alpine"],
)
def test_bad_references_are_clear_errors(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid image reference"):
        parse(bad)


def test_loopback_hosts() -> None:
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost:80") and is_loopback("[::1]:5000")
    assert not is_loopback("registry-1.docker.io") and not is_loopback("10.0.0.1:5000")


def test_challenges() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/alpine:pull",error="insufficient_scope"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/alpine:pull",
        "error": "insufficient_scope",
    }
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})


def _auth(user: str, pw: str) -> str:
    return base64.b64encode(f"{user}:{pw}".encode()).decode()


def test_credentials_from_config_files_first_match_wins(tmp_path: Path) -> None:
    first = tmp_path / "first.json"
    first.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": _auth("hub", "pw1")}}}))
    second = tmp_path / "second.json"
    second.write_text(
        json.dumps(
            {
                "auths": {
                    "http://127.0.0.1:5000": {"auth": _auth("local", "p:w:2")},
                    "https://index.docker.io/v1/": {"auth": _auth("other", "x")},
                    "ghcr.io": {"username": "gh", "password": "tok"},
                    "token.example": {"identitytoken": "refresh-me"},
                }
            }
        )
    )
    store = CredentialStore([tmp_path / "absent.json", first, second])
    hub = store.lookup("docker.io")
    assert hub is not None and (hub.username, hub.password) == ("hub", "pw1")
    local = store.lookup("127.0.0.1:5000")
    assert local is not None and (local.username, local.password) == ("local", "p:w:2")
    gh = store.lookup("ghcr.io")
    assert gh is not None and (gh.username, gh.password) == ("gh", "tok")
    tok = store.lookup("token.example")
    assert tok is not None and tok.identity_token == "refresh-me"
    assert store.lookup("nowhere.example") is None
    assert "pw1" not in repr(hub)


def test_credential_helpers_are_run_like_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-faasdtest"
    helper.write_text(
        '#!/bin/sh\nread host\n[ "$1" = get ] || exit 2\n'
        'case "$host" in reg.example) echo \'{"Username":"hu","Secret":"hs"}\';; '
        "*) echo 'credentials not found in native keychain'; exit 1;; esac\n"
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"credHelpers": {"reg.example": "faasdtest", "broken.example": "missing"}}))
    creds = CredentialStore([cfg]).lookup("reg.example")
    assert creds is not None and (creds.username, creds.password) == ("hu", "hs")
    with pytest.raises(RegistryAuthError, match="docker-credential-missing"):
        CredentialStore([cfg]).lookup("broken.example")
    cfg.write_text(json.dumps({"credsStore": "faasdtest"}))
    assert CredentialStore([cfg]).lookup("other.example") is None


def test_unreadable_config_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text("{not json")
    with pytest.raises(InvalidInputError, match="is unreadable"):
        CredentialStore([cfg]).lookup("docker.io")
    cfg.write_text(json.dumps({"auths": {"h": {"auth": "!!notbase64"}}}))
    with pytest.raises(InvalidInputError, match="not base64"):
        CredentialStore([cfg]).lookup("h")


def test_resumable_writer_continues_and_verifies(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    data = os.urandom(300_000)
    digest = dg.sha256_bytes(data)
    w = store.resumable_writer(digest)
    with pytest.raises(ConflictError, match="another pull"):
        store.resumable_writer(digest)
    w.write(data[:100_000])
    w.suspend()
    w2 = store.resumable_writer(digest)
    assert w2.size == 100_000  # picks up where the first stopped
    w2.write(data[100_000:])
    info = w2.commit(digest, len(data))
    assert info.created and store.read_bytes(digest) == data
    assert list(store.ingest_dir.iterdir()) == []

    bad = store.resumable_writer(dg.sha256_bytes(b"other"))
    bad.write(b"not other")
    with pytest.raises(InvalidInputError, match="digest mismatch"):
        bad.commit(dg.sha256_bytes(b"other"), 9)
    assert list(store.ingest_dir.iterdir()) == []  # a mismatch removes the partial
    r = store.resumable_writer(D)
    r.write(b"abc")
    r.reset()
    assert r.size == 0
    r.abort()
    assert list(store.ingest_dir.iterdir()) == []
