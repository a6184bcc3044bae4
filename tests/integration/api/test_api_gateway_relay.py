"""Keyed connections relayed to a warm worker, with the real daemon: the client's connection stays in the
daemon, which checks the key of every request and passes it without the key to the worker's sandbox (one
end of a socket pair); the worker serves and reports. Whatever the relay does not pass (another key, an
invalid one, a rate-limited one) and whatever the worker gives back (a failed function, a deleted
function) is answered by the daemon, in order, with the key put back on requests already passed."""

from __future__ import annotations

import http.client
import json
import socket
import time

import httpx
import pytest

from fixtures.daemon import Daemon, daemon_env
from fixtures.gateway import call, execution, holders_of, metric, warm_daemon

pytestmark = pytest.mark.integration
__all__ = ["daemon_env"]


def request(path: str, key: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: faasd\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def read_response(f: object) -> tuple[int, dict[str, str], bytes]:
    status = int(f.readline().split()[1])  # type: ignore[attr-defined]
    headers: dict[str, str] = {}
    while (line := f.readline()) not in (b"\r\n", b""):  # type: ignore[attr-defined]
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, f.read(int(headers["content-length"]))  # type: ignore[attr-defined]


def wait_metric(c: httpx.Client, name: str, want: float, **labels: str) -> None:
    deadline = time.monotonic() + 20
    while metric(c, name, **labels) != want:
        assert time.monotonic() < deadline, f"{name} {labels} stayed at {metric(c, name, **labels)}"
        time.sleep(0.05)


def test_gateway_relays_keyed_connections_to_warm_workers(
    daemon_env: tuple[Daemon, str], unique_id: str
) -> None:
    fn = unique_id
    invoke = f"/api/v1/functions/{fn}/invoke"
    with warm_daemon(daemon_env, fn, invoke) as (d, c, _):
        inv = c.post("/api/v1/keys", json={"name": f"inv-{fn}", "scopes": ["invoke"]}).json()
        other = c.post("/api/v1/keys", json={"name": f"other-{fn}", "scopes": ["invoke"]}).json()
        limited = c.post(
            "/api/v1/keys",
            json={"name": f"lim-{fn}", "scopes": ["invoke"], "rate_limit_rps": 0.01, "burst": 2},
        ).json()
        assert d.proc is not None
        auth = {"Authorization": f"Bearer {inv['key']}"}

        # 1. served by the worker, recorded by the daemon; the client's connection stays in the daemon
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
        ids = []
        for body in (b"a", b"b", b"c"):
            status, headers, out = call(conn, "POST", invoke, body, auth)
            assert (status, out) == (200, b"echo:" + body)
            assert headers["x-cold-start"] == "false" and "x-call-id" not in headers
            ids.append(headers["x-execution-id"])
        # a body and an answer larger than the socket buffers go through whole (flow control both ways)
        big = b"x" * (3 << 20)
        status, headers, out = call(conn, "POST", invoke, big, auth)
        assert (status, len(out), out[:9]) == (200, len(big) + 5, b"echo:xxxx")
        assert holders_of(conn) == [d.proc.pid]
        assert metric(c, "faasd_gateway_relays_total", function=fn) >= 1
        assert metric(c, "faasd_gateway_relays_open") >= 1
        for ex_id, sent in zip(ids, "abc", strict=True):
            ex = execution(c, ex_id)
            assert ex["status"] == "succeeded" and ex["result"] == f"echo:{sent}" and ex["kind"] == "sync"
        logs = c.get(f"/api/v1/functions/{fn}/logs").text
        assert "got b" in logs  # printed in the sandbox, reported by its agent
        # the access log names the key of relayed requests (from the connection's gate)
        deadline = time.monotonic() + 10
        while True:
            lines = [json.loads(x) for x in d.log_path.read_text().splitlines() if '"http_route"' in x]
            mine = [x for x in lines if x["http_path"] == invoke and x["key_id"] == inv["id"]]
            if len(mine) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(mine) >= 3, lines[-5:]
        # another key on the same connection: the daemon serves it (and the rest of the connection)
        status, _, out = call(conn, "POST", invoke, b"d", {"Authorization": f"Bearer {other['key']}"})
        assert (status, out) == (200, b"echo:d")
        status, _, out = call(conn, "POST", invoke, b"e", {"Authorization": "Bearer not-a-key"})
        assert status == 401, out
        assert call(conn, "POST", invoke, b"f", auth)[:3:2] == (200, b"echo:f")
        conn.close()

        # 2. a failed function with a request behind it, pipelined: the daemon's error answer, then the
        # next request, passed without its key and given back with it (else 401)
        with socket.create_connection(("127.0.0.1", d.port), timeout=60) as s:
            f = s.makefile("rb")
            s.sendall(request(invoke, inv["key"], b"g"))
            assert read_response(f)[2] == b"echo:g"
            s.sendall(request(invoke, inv["key"], b"boom") + request(invoke, inv["key"], b"h"))
            status, headers, out = read_response(f)
            assert status == 500 and json.loads(out)["error"] == "function_error", out
            assert execution(c, headers["x-execution-id"])["status"] == "failed"
            assert read_response(f)[:3:2] == (200, b"echo:h")
            s.sendall(request(invoke, inv["key"], b"i"))
            assert read_response(f)[2] == b"echo:i"

        # 3. a rate-limited key: the requests within its burst pass, the next is the daemon's 429
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
        lim = {"Authorization": f"Bearer {limited['key']}"}
        assert [call(conn, "POST", invoke, b, lim)[0] for b in (b"j", b"k", b"l")] == [200, 200, 429]
        conn.close()

        # 4. relays end with their connections
        wait_metric(c, "faasd_gateway_relays_open", 0)

        # 5. deleting the function takes an idle relayed connection back (not cut under the client)
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
        assert call(conn, "POST", invoke, b"m", auth)[2] == b"echo:m"
        assert metric(c, "faasd_gateway_relays_open") == 1
        assert c.delete(f"/api/v1/functions/{fn}").status_code in (200, 204)
        status, _, out = call(conn, "POST", invoke, b"n", auth)
        assert status == 404, out
        wait_metric(c, "faasd_gateway_relays_open", 0)
        conn.close()


def test_idle_handed_and_relayed_connections_are_closed(
    daemon_env: tuple[Daemon, str], unique_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the daemon's own server closes a connection idle for ``FAASD_KEEP_ALIVE_S``, so does the worker
    for connections handed or relayed to it (else each idle one would hold descriptors for ever)."""
    monkeypatch.setenv("FAASD_KEEP_ALIVE_S", "1")
    fn = unique_id
    invoke = f"/api/v1/functions/{fn}/invoke"
    with warm_daemon(daemon_env, fn, invoke) as (d, c, auth):
        handed = socket.create_connection(("127.0.0.1", d.port), timeout=30)
        relayed = socket.create_connection(("127.0.0.1", d.port), timeout=30)
        with handed, relayed:
            handed.sendall(f"POST /function/{fn} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na".encode())
            assert read_response(handed.makefile("rb"))[2] == b"echo:a"
            relayed.sendall(request(invoke, auth["Authorization"].split()[1], b"b"))
            assert read_response(relayed.makefile("rb"))[2] == b"echo:b"
            assert metric(c, "faasd_gateway_relays_open") == 1
            # idle for longer than the keep-alive time: both are closed by the side serving them
            assert handed.recv(1) == b"" and relayed.recv(1) == b""
        wait_metric(c, "faasd_gateway_relays_open", 0)
