from __future__ import annotations

import errno
import hashlib
import io
import os
from pathlib import Path

import pytest

from faasd.content import ContentStore, chain_ids, sha256_bytes
from faasd.content import digest as dg
from faasd.errors import InvalidInputError, NotFoundError, StorageFullError

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "content")


def _ingest_leftovers(store: ContentStore) -> list[str]:
    return sorted(os.listdir(store.ingest_dir)) if store.ingest_dir.exists() else []


def test_ingest_roundtrip(store: ContentStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = sha256_bytes(data)
    info = store.ingest(io.BytesIO(data), digest, len(data))
    assert info.digest == digest and info.size == len(data) and info.created
    assert store.exists(digest)
    assert store.size(digest) == len(data)
    assert store.path(digest) == store.root / "blobs" / "sha256" / digest[7:]
    with store.open(digest) as f:
        assert f.read() == data
    assert store.list() == [digest]
    assert _ingest_leftovers(store) == []
    assert store.path(digest).stat().st_mode & 0o777 == 0o444


def test_ingest_without_expectation_and_dedup(store: ContentStore) -> None:
    a = store.write_bytes(b"hello")
    b = store.ingest(io.BytesIO(b"hello"))
    assert a.digest == b.digest == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert a.created and not b.created
    assert store.list() == [a.digest]


def test_digest_mismatch_leaves_nothing(store: ContentStore) -> None:
    wrong = sha256_bytes(b"other")
    with pytest.raises(InvalidInputError, match="digest mismatch"):
        store.ingest(io.BytesIO(b"payload"), wrong)
    assert store.list() == []
    assert _ingest_leftovers(store) == []


def test_size_mismatch_and_oversize(store: ContentStore) -> None:
    data = b"x" * 100
    with pytest.raises(InvalidInputError, match="has 99 bytes, expected 100"):
        store.ingest(io.BytesIO(data[:99]), sha256_bytes(data), 100)
    with pytest.raises(InvalidInputError, match="larger than"):
        store.ingest(io.BytesIO(data * 20000), None, None, max_size=1000)
    assert store.list() == [] and _ingest_leftovers(store) == []


def test_invalid_digest_rejected(store: ContentStore) -> None:
    for bad in ("sha256:abc", "md5:" + "0" * 32, "sha256:" + "G" * 64, "sha256:../../etc/passwd", ""):
        with pytest.raises(InvalidInputError):
            store.exists(bad)
    with pytest.raises(InvalidInputError):
        store.ingest(io.BytesIO(b"x"), "sha512:" + "0" * 128)


def test_missing_blob(store: ContentStore) -> None:
    d = sha256_bytes(b"nope")
    assert not store.exists(d)
    with pytest.raises(NotFoundError):
        store.path(d)
    with pytest.raises(NotFoundError):
        store.open(d)
    with pytest.raises(NotFoundError):
        store.size(d)
    assert store.delete(d) is False


def test_delete(store: ContentStore) -> None:
    info = store.write_bytes(b"bye")
    assert store.delete(info.digest)
    assert not store.exists(info.digest)
    assert store.list() == []


def test_writer_abort_on_exception(store: ContentStore) -> None:
    with pytest.raises(RuntimeError), store.writer() as w:
        w.write(b"partial")
        raise RuntimeError("boom")
    assert _ingest_leftovers(store) == [] and store.list() == []


def test_enospc_becomes_storage_full(store: ContentStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    calls = {"n": 0}

    def failing_write(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(StorageFullError, match="no space left"):
        store.ingest(io.BytesIO(os.urandom(3 * 1024 * 1024)))
    monkeypatch.undo()
    assert store.list() == [] and _ingest_leftovers(store) == []


def test_clean_ingest(store: ContentStore) -> None:
    store.ingest_dir.mkdir(parents=True)
    (store.ingest_dir / "stale.part").write_bytes(b"x")
    assert store.clean_ingest() == 1
    assert _ingest_leftovers(store) == []


def test_chain_ids() -> None:
    a, b = sha256_bytes(b"a"), sha256_bytes(b"b")
    assert chain_ids([]) == []
    assert chain_ids([a]) == [a]
    assert chain_ids([a, b]) == [a, sha256_bytes(f"{a} {b}".encode())]
    assert dg.hex_of(a) == a[7:]
