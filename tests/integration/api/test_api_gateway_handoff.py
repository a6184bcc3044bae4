"""Gateway hand-off with the real daemon: a client connection whose first request invokes a function with
a warm Python worker is passed into the worker's sandbox (its TCP socket ends up held by the sandboxed
agent alone), served there with the gateway's own answers, recorded by the daemon from the worker's
reports, and given back whenever the daemon has to answer: another route, a credential, a function
error, the function deleted. Connections carrying faasd's credentials are never handed."""

from __future__ import annotations

import http.client
import json
import sqlite3

import pytest

from fixtures.daemon import Daemon, daemon_env
from fixtures.gateway import call, execution, holders_of, in_sandbox, metric, warm_daemon

pytestmark = pytest.mark.integration
__all__ = ["daemon_env"]


def test_gateway_hands_connections_to_warm_workers(daemon_env: tuple[Daemon, str], unique_id: str) -> None:
    fn = unique_id
    with warm_daemon(daemon_env, fn, f"/function/{fn}") as (d, c, auth):

        # 1. /function/<name>: the connection goes to the worker; the gateway's answers, the daemon's records
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
        ids = []
        for body in (b"a", b"b", b"c"):
            status, headers, out = call(conn, "POST", f"/function/{fn}", body)
            assert (status, out) == (200, b"echo:" + body)
            assert headers["x-call-id"] == headers["x-execution-id"] and headers["x-cold-start"] == "false"
            assert headers["server"] == "uvicorn" and float(headers["x-duration-ms"]) >= 0
            ids.append(headers["x-execution-id"])
        # the record keeps the headers the function saw (the worker reports no others)
        sent = {"X-Trace": "t1", "Accept": "text/plain", "Cookie-Jar": "c"}
        status, headers, _ = call(conn, "POST", f"/function/{fn}", b"h", sent)
        assert status == 200
        ex_id = headers["x-execution-id"]
        assert execution(c, ex_id)["status"] == "succeeded"
        with sqlite3.connect(d.settings.data_dir / "faasd.db") as db:
            (stored,) = db.execute("SELECT request_headers FROM executions WHERE id = ?", (ex_id,)).fetchone()
        # http.client adds Host, Content-Length and Accept-Encoding; Cookie-Jar is not forwarded
        assert json.loads(stored) == {"x-trace": "t1", "accept": "text/plain", "accept-encoding": "identity"}
        holders = holders_of(conn)
        assert in_sandbox(holders), f"the connection is not held in the sandbox: {holders}"
        assert d.proc is not None and d.proc.pid not in holders
        for ex_id, sent in zip(ids, ("a", "b", "c"), strict=True):
            ex = execution(c, ex_id)
            assert ex["function"] == fn and ex["status"] == "succeeded" and ex["http_status"] == 200
            assert ex["result"] == f"echo:{sent}" and ex["cold_start"] is False and ex["kind"] == "sync"
        logs = c.get(f"/api/v1/functions/{fn}/logs").text
        assert "got b" in logs  # the handler's output, captured in the sandbox, stored by the daemon
        assert metric(c, "faasd_gateway_handoffs_total", function=fn) >= 1
        assert metric(c, "faasd_invocations_total", function=fn, status="succeeded") >= 4

        # 2. a function error: the worker gives the connection back and the daemon answers as it always does
        backs = metric(c, "faasd_gateway_handbacks_total", function=fn)
        status, headers, out = call(conn, "POST", f"/function/{fn}", b"boom")
        err = json.loads(out)
        assert status == 500 and err["error"] == "function_error", out
        assert "boom went the handler" in err["details"]["traceback"]
        assert execution(c, headers["x-execution-id"])["status"] == "failed"
        assert metric(c, "faasd_gateway_handbacks_total", function=fn) == backs + 1
        # the connection lives on, in the daemon now
        assert call(conn, "POST", f"/function/{fn}", b"d")[2] == b"echo:d"
        assert d.proc.pid in holders_of(conn)
        conn.close()

        # 3. another route on a handed connection comes back to the daemon
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
        assert call(conn, "POST", f"/function/{fn}/sub/path?x=1", b"e")[2] == b"echo:e"
        assert in_sandbox(holders_of(conn))
        status, _, out = call(conn, "GET", "/healthz")
        assert status == 200 and json.loads(out)["status"] == "ok"
        conn.close()

        # 4. faasd's credentials never go into a sandbox: a connection whose first request carries a key
        # is not handed (the API route needs one), and a later request with one comes back to the daemon
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
        invoke = f"/api/v1/functions/{fn}/invoke"
        status, headers, out = call(conn, "POST", invoke, b"f", auth)
        assert (status, out) == (200, b"echo:f") and "x-call-id" not in headers
        assert holders_of(conn) == [d.proc.pid]
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
        assert call(conn, "POST", f"/function/{fn}", b"g", auth)[2] == b"echo:g"
        assert holders_of(conn) == [d.proc.pid]
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
        assert call(conn, "POST", f"/function/{fn}", b"h")[2] == b"echo:h"
        assert in_sandbox(holders_of(conn))
        status, _, out = call(conn, "POST", invoke, b"i", {"Authorization": "Bearer not-a-key"})
        assert status == 401, out  # answered by the daemon, not the function
        assert holders_of(conn) == [d.proc.pid]
        conn.close()

        # 5. deleting the function takes its handed connections back first (not cut under the client)
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
        assert call(conn, "POST", f"/function/{fn}", b"i")[2] == b"echo:i"
        assert in_sandbox(holders_of(conn))
        assert c.delete(f"/api/v1/functions/{fn}").status_code in (200, 204)
        status, _, out = call(conn, "POST", f"/function/{fn}", b"j")
        assert status == 404, out
        conn.close()


@pytest.mark.parametrize(
    ("switch", "route", "keyed", "counter"),
    [
        ("FAASD_GATEWAY_HANDOFF", "/function/{}", False, "faasd_gateway_handoffs_total"),
        ("FAASD_GATEWAY_RELAY", "/api/v1/functions/{}/invoke", True, "faasd_gateway_relays_total"),
    ],
)
def test_switched_off_the_daemon_serves_every_request(
    daemon_env: tuple[Daemon, str],
    unique_id: str,
    monkeypatch: pytest.MonkeyPatch,
    switch: str,
    route: str,
    keyed: bool,
    counter: str,
) -> None:
    """``FAASD_GATEWAY_HANDOFF=false``: no connection is handed; ``FAASD_GATEWAY_RELAY=false``: no keyed
    connection is relayed (the API route with a key is served by the daemon, as before the relay)."""
    monkeypatch.setenv(switch, "false")
    path = route.format(unique_id)
    with warm_daemon(daemon_env, unique_id, path) as (d, c, auth):
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
        for body in (b"a", b"b"):
            assert call(conn, "POST", path, body, auth if keyed else None)[2] == b"echo:" + body
        assert d.proc is not None and holders_of(conn) == [d.proc.pid]
        conn.close()
        assert metric(c, counter, function=unique_id) == 0
