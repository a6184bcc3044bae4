"""faasd Python agent: runs inside a sandbox as the container's main process.

Standard library only (it runs under the image's own ``python3``, 3.8+). Started through the launcher
``agent.py`` (which imports this module, so that its bytecode cache is used) as::

    python3 /faasd/agent/python/agent.py --socket /run/faasd-io/agent.sock \\
        --handler main:handle --code-dir /function [--fork] [--function-name NAME]

It imports the user's handler once, then serves one request per connection on a Unix socket, using
the frame protocol described in ``../PROTOCOL.md``. Each invoke runs either in-process (fastest
warm path, :mod:`faasd_invoke`) or in a child forked from this preloaded process (the "zygote",
:mod:`faasd_fork`: no state leaks from one request to the next, stdout/stderr are captured at the
file-descriptor level).

No connection to the host stays open between requests, so a CRIU checkpoint taken between two
requests never sees an established connection.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import random
import signal
import socket
import sys

_AGENT_DIR = os.path.dirname(os.path.abspath(__file__))
if _AGENT_DIR not in sys.path:
    sys.path.insert(0, _AGENT_DIR)
import faasd_direct  # noqa: E402  (direct function address: HTTP on a socket handed in by the host)
import faasd_runtime  # noqa: E402  (must be importable by user code via sys.modules)
from faasd_fork import Zygote  # noqa: E402
from faasd_frames import (  # noqa: E402
    ProtocolError,
    encode_frame,
    parse_frame_bytes,
    read_frame,
)
from faasd_invoke import Invoker  # noqa: E402
from faasd_results import user_traceback  # noqa: E402

# The agent's own directory must not shadow user modules (a user module named "agent", say).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _AGENT_DIR]

PROTOCOL_VERSION = 1
CONN_IO_TIMEOUT_S = 60.0


# ----------------------------------------------------------------------------------------- agent
def seed_prngs(seed: str | None) -> None:
    """Reseed the PRNGs of this process: ``random`` and, if the handler imported it, numpy's global
    generator. ``seed`` None: from the kernel (copies differ); a string: deterministically from it."""
    if seed is None:
        random.seed()
    else:
        random.seed(seed)
    np = sys.modules.get("numpy")
    nprandom = getattr(np, "random", None) if np is not None else None
    if nprandom is not None and hasattr(nprandom, "seed"):
        try:
            if seed is None:
                nprandom.seed()
            else:
                import hashlib  # here: loading OpenSSL's libcrypto is ~2.5 ms of every sandbox start

                nprandom.seed(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big"))
        except Exception:
            pass


class Agent:
    def __init__(self, socket_path: str, handler: str, code_dir: str, function_name: str, fork: bool) -> None:
        self.socket_path = socket_path
        self.handler_spec = handler
        self.code_dir = code_dir
        self.fork_default = fork
        self.load_error: str | None = None
        self.listener: socket.socket | None = None
        self.requests = 0
        self.seed: str | None = None  # set by a seeded `restored` frame (reproducible branch copy)
        self.invoker = Invoker(function_name)
        self.zygote = Zygote(self.invoker.run_in_child, self._in_child)
        self.direct: faasd_direct.DirectServer | None = None
        self.direct_timeout_s: float | None = None

    # -- startup
    def load(self) -> None:
        if self.code_dir:
            if os.path.isdir(self.code_dir):
                os.chdir(self.code_dir)
            sys.path.insert(0, self.code_dir)
        module_name, _, attr = self.handler_spec.partition(":")
        attr = attr or "handle"
        try:
            module = importlib.import_module(module_name)
            fn = getattr(module, attr, None)
            if fn is None:
                raise AttributeError(f"module {module_name!r} has no attribute {attr!r}")
            if not callable(fn):
                raise TypeError(f"{module_name}:{attr} is not callable")
            self.invoker.set_handler(fn)
        except BaseException:
            self.load_error = user_traceback(sys.exc_info()[1])
            if self.code_dir and not os.path.isdir(self.code_dir):
                self.load_error += f"(the code directory {self.code_dir} does not exist in the sandbox)\n"
            print(
                f"faasd agent: cannot load handler {self.handler_spec!r}:\n{self.load_error}",
                file=sys.stderr,
                flush=True,
            )

    def listen(self) -> None:
        # Bound directly under its final name (CRIU re-binds a restored listening socket at the path it
        # was bound to); a host connecting between bind() and listen() gets ECONNREFUSED and retries.
        os.makedirs(os.path.dirname(self.socket_path) or ".", exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # 0600: only the host (root) and this user may connect
        try:
            sock.bind(self.socket_path)
        finally:
            os.umask(old_umask)
        sock.listen(64)
        self.listener = sock

    def serve_forever(self) -> None:
        assert self.listener is not None
        if self.direct is not None:
            # Agent socket and direct address from one loop; returns once the host sent `unlisten`.
            self.direct.serve(
                self.listener, self.serve_connection, self.direct_invoke, lambda: self.direct is not None
            )
        while True:
            try:
                conn, _ = self.listener.accept()
            except InterruptedError:
                continue
            self.serve_connection(conn)

    def serve_connection(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(CONN_IO_TIMEOUT_S)
            self.handle_connection(conn)
        except Exception:
            # Never let one bad connection kill the agent; the host sees the connection close.
            import traceback

            traceback.print_exc()
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            self.zygote.reap_stragglers()  # what a forked request left behind does not outlive it
            self.ensure_spare()
            if os.getpid() == 1:
                _reap_orphans()

    # -- one connection, one request
    def handle_connection(self, conn: socket.socket) -> None:
        try:
            header, body = read_frame(conn)
        except (ProtocolError, OSError) as exc:
            _send_quiet(conn, encode_frame({"type": "error", "kind": "bad_request", "message": str(exc)}))
            return
        kind = header["type"]
        if kind == "ping":
            self._pong(conn)
        elif kind == "invoke":
            self.requests += 1
            if self.invoker.handler is None:
                _send_quiet(
                    conn,
                    encode_frame(
                        {
                            "type": "error",
                            "kind": "not_ready",
                            "message": f"handler {self.handler_spec!r} failed to load",
                            "traceback": self.load_error or "",
                        }
                    ),
                )
                return
            use_fork = header.get("fork")
            if use_fork is None:
                use_fork = self.fork_default
            if use_fork:
                self.zygote.invoke(conn, header, body)
            else:
                self.invoker.invoke(conn, header, body)
        elif kind == "restored":
            self._restored(conn, header)
        elif kind == "unlisten":
            # Before a checkpoint: the listening socket belongs to the host's network namespace and must
            # not be in the image. The other workers of the function keep serving the address.
            if self.direct is not None:
                self.direct.close()
                self.direct = None
            _send_quiet(conn, encode_frame({"type": "ack", "of": "unlisten"}))
        else:
            _send_quiet(
                conn,
                encode_frame(
                    {"type": "error", "kind": "bad_request", "message": f"unknown frame type {kind!r}"}
                ),
            )

    def _pong(self, conn: socket.socket) -> None:
        pong = {
            "type": "pong",
            "protocol": PROTOCOL_VERSION,
            "runtime": "python",
            "runtime_version": sys.version.split()[0],
            "pid": os.getpid(),
            "handler": self.handler_spec,
            "fork": self.fork_default,
            "ready": self.invoker.handler is not None,
            "requests": self.requests,
            "direct": self.direct is not None,
            "direct_requests": self.direct.requests if self.direct is not None else 0,
        }
        if self.load_error:
            pong["error"] = self.load_error
        _send_quiet(conn, encode_frame(pong))

    def _restored(self, conn: socket.socket, header: dict) -> None:
        # Every copy restored from one snapshot starts with the same PRNG state: reseed from the
        # kernel (os.urandom), or from the seed the host derived for this copy (a reproducible
        # branch), then let user code fix up its own state.
        seed = header.get("seed")
        self.seed = str(seed) if isinstance(seed, str) and seed else None
        self.zygote.forks = 0
        seed_prngs(self.seed)
        try:
            import tempfile

            tempfile._name_sequence = None  # type: ignore[attr-defined]
        except Exception:
            pass
        errors = faasd_runtime.run_after_restore_hooks()
        # A spare child forked before the snapshot would carry the old PRNG state and miss the hooks'
        # effects: replace it (serve_forever forks a new one after this response).
        self.zygote.discard_spare()
        _send_quiet(
            conn,
            encode_frame(
                {
                    "type": "ack",
                    "of": "restored",
                    "hooks_run": faasd_runtime.hook_count(),
                    "hook_errors": errors,
                }
            ),
        )

    def gate_invoke(self, header: dict, body: bytes, output_limit: int) -> tuple:
        """One request of a connection the daemon's gateway handed over (``faasd_handoff``): run in
        process with its output captured up to ``output_limit`` bytes per stream. Returns the final
        frame's header and body, stdout and stderr."""
        self.requests += 1
        captured = {"stdout": bytearray(), "stderr": bytearray()}

        def send(kind: str, data: bytes) -> None:
            buf = captured[kind]
            room = output_limit - len(buf)
            if room > 0:
                buf += data[:room]

        if self.invoker.handler is None:
            fh = {
                "type": "error",
                "kind": "not_ready",
                "message": f"handler {self.handler_spec!r} failed to load",
                "traceback": self.load_error or "",
            }
            fb = b""
        else:
            fh, fb = self.invoker.run(header, body, send)
            if os.getpid() == 1:
                _reap_orphans()
        return fh, fb, captured["stdout"], captured["stderr"]

    def direct_invoke(self, method: str, path: str, query: str, headers: dict, body: bytes) -> tuple:
        """One request from the direct address: run the handler (in-process, or in a forked child in
        fork mode) and return ``(status, headers, body)``. Output is not captured: it goes to the
        sandbox's log, as nothing on the host follows this request."""
        header = {
            "type": "invoke",
            "id": os.urandom(8).hex(),
            "method": method,
            "path": path,
            "query": query,
            "headers": headers,
            "timeout_s": self.direct_timeout_s,
        }
        if self.invoker.handler is None:
            return 503, [["content-type", "text/plain"]], b"the function's handler failed to load\n"
        if self.fork_default:
            final = self.zygote.relay(header, body)
            self.ensure_spare()
        else:
            final = self.invoker.relay(header, body)
            if os.getpid() == 1:
                _reap_orphans()
        out, out_body = parse_frame_bytes(final)
        if out.get("type") == "result":
            return int(out.get("status") or 200), out.get("headers") or [], out_body
        status = 504 if out.get("kind") == "timeout" else 500
        tb = out.get("traceback") or ""
        if tb:
            print(tb, file=sys.stderr, flush=True)
        message = f"{out.get('kind', 'error')}: {out.get('message', '')}\n".encode("utf-8", "replace")
        return status, [["content-type", "text/plain; charset=utf-8"]], message

    def ensure_spare(self) -> None:
        """Fork mode: fork the next request's child now, while nobody waits."""
        if self.fork_default and self.invoker.handler is not None:
            self.zygote.ensure_spare()

    def _in_child(self, fork_number: int) -> None:
        if self.seed is not None:
            # CPython reseeds `random` from the kernel in every child; a seeded copy's n-th child gets a
            # state derived from (seed, n) instead, so its requests repeat exactly
            seed_prngs(f"{self.seed}:{fork_number}")
        if self.listener is not None:
            self.listener.close()


# ------------------------------------------------------------------------------------ utilities


def _send_quiet(conn: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(data)


def signal_ready(fifo: str) -> None:
    """Tell the host the agent listens: one byte on its ``ready`` FIFO, if it made one (PROTOCOL.md)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # absent, or nobody reads it (ENXIO): the host polls
        return
    try:
        os.write(fd, b"r")
    except OSError:
        pass
    finally:
        os.close(fd)


def _reap_orphans() -> None:
    """As PID 1 the agent inherits every orphaned process: collect their exit statuses."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="faasd-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", default="/run/faasd-io/agent.sock")
    parser.add_argument("--handler", required=True, help="module:function, e.g. handler:handle")
    parser.add_argument("--code-dir", default="/function")
    parser.add_argument("--function-name", default="")
    parser.add_argument("--fork", action="store_true", help="fork a child per request by default")
    parser.add_argument("--direct-socket", default="", help="receive a listening socket here (SCM_RIGHTS)")
    parser.add_argument("--direct-timeout-s", type=float, default=0.0)
    args = parser.parse_args(argv)

    agent = Agent(args.socket, args.handler, args.code_dir, args.function_name, args.fork)
    if args.direct_socket:
        try:
            listener, channel = faasd_direct.receive_listener(args.direct_socket)
            # Connections from the daemon's gateway are served in process (not in fork mode).
            gate = None if args.fork else agent.gate_invoke
            agent.direct = faasd_direct.DirectServer(listener, channel, gate)
            agent.direct_timeout_s = args.direct_timeout_s or None
        except OSError as exc:
            print(f"faasd agent: no direct address: {exc}", file=sys.stderr, flush=True)

    def on_term(signum: int, frame: object) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGALRM, agent.invoker.on_alarm)
    agent.load()
    if args.fork:
        # Zygote: move everything imported so far out of the collector's reach, so that children do not
        # touch (and copy-on-write) those pages when the GC runs.
        import gc

        gc.collect()
        gc.freeze()
    agent.listen()
    signal_ready(os.path.join(os.path.dirname(args.socket), "ready"))
    agent.ensure_spare()
    agent.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
