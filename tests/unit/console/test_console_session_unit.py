"""Session table and CSRF rules of the console (pure logic, fake clock)."""

from __future__ import annotations

import pytest

from faasd.console.session import SessionStore, check_csrf, check_origin
from faasd.errors import ForbiddenError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_session_lookup_is_by_token_and_expires() -> None:
    clock = Clock()
    store = SessionStore(ttl_s=100, idle_s=30, clock=clock)
    token, sess = store.create("fdk_x", "id1", "k", frozenset({"invoke"}))
    assert store.get(token) is sess
    assert store.get("not-" + token) is None and store.get(None) is None
    assert token not in store._sessions  # only the hash is kept
    clock.now += 29
    assert store.get(token) is sess  # idle timer restarts on use
    clock.now += 29
    assert store.get(token) is sess
    clock.now += 31
    assert store.get(token) is None  # idle too long
    token2, _ = store.create("fdk_x", "id1", "k", frozenset({"invoke"}))
    clock.now += 25
    store.get(token2)
    clock.now += 25
    store.get(token2)
    clock.now += 25
    store.get(token2)
    clock.now += 26
    assert store.get(token2) is None  # absolute lifetime


def test_delete_and_revoke_key() -> None:
    store = SessionStore()
    a, _ = store.create("k1", "id1", "one", frozenset({"admin"}))
    b, _ = store.create("k1", "id1", "one", frozenset({"admin"}))
    c, _ = store.create("k2", "id2", "two", frozenset({"invoke"}))
    assert store.delete(a) and not store.delete(a)
    assert store.revoke_key("id1") == 1
    assert store.get(b) is None and store.get(c) is not None


def test_csrf_token_required_for_writes_only() -> None:
    _, sess = SessionStore().create("k", "id", "n", frozenset({"admin"}))
    check_csrf("GET", {}, sess)
    check_csrf("HEAD", {}, sess)
    for headers in ({}, {"x-csrf-token": "wrong"}, {"x-csrf-token": sess.csrf[:-1]}):
        with pytest.raises(ForbiddenError, match="CSRF"):
            check_csrf("POST", headers, sess)
    check_csrf("DELETE", {"x-csrf-token": sess.csrf, "host": "h:1", "origin": "http://h:1"}, sess)


def test_origin_must_be_this_host() -> None:
    check_origin({"host": "127.0.0.1:8080"})  # no Origin: the token decides
    check_origin({"host": "127.0.0.1:8080", "origin": "http://127.0.0.1:8080"})
    for bad in ("http://evil.example", "null", "http://127.0.0.1:8081"):
        with pytest.raises(ForbiddenError, match="origin"):
            check_origin({"host": "127.0.0.1:8080", "origin": bad})
    with pytest.raises(ForbiddenError, match="cross-site"):
        check_origin({"host": "h", "sec-fetch-site": "cross-site"})
