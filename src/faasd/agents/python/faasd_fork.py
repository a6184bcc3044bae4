"""Fork mode of the Python agent: the request process forked from the preloaded agent (:class:`Zygote`), and
relaying what it writes (stdout, stderr, its result frame) back to the host, with the request's timeout.
Standard library only (Python 3.8+)."""

from __future__ import annotations

import contextlib
import io
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

from faasd_frames import (
    ProtocolError,
    encode_frame,
    frame_complete,
    parse_frame_bytes,
    read_frame,
    read_frame_fd,
)

STREAM_CHUNK = 64 * 1024


class Child:
    """A forked request process and the parent's ends of its pipes."""

    def __init__(self, pid: int, req_w: int, out_r: int, err_r: int, res_r: int) -> None:
        self.pid = pid
        self.req_w = req_w
        self.out_r = out_r
        self.err_r = err_r
        self.res_r = res_r

    def close_fds(self) -> None:
        for fd in (self.req_w, self.out_r, self.err_r, self.res_r):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.req_w = self.out_r = self.err_r = self.res_r = -1

    def discard(self) -> None:
        self.close_fds()  # EOF on its request pipe: it exits by itself
        kill_group(self.pid)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def with_run_ms(header: dict, started: float, body: bytes = b"") -> bytes:
    return encode_frame(*timed(header, started, body))


def timed(header: dict, started: float, body: bytes = b"") -> tuple:
    header["run_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return header, body


def exit_code_of(status: int) -> int:
    """Like ``os.waitstatus_to_exitcode`` (3.9+): the exit code, or -signal."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def drain(fd: int) -> list[bytes]:
    """Whatever is buffered in pipe ``fd`` right now, without blocking."""
    chunks: list[bytes] = []
    os.set_blocking(fd, False)
    while True:
        try:
            data = os.read(fd, STREAM_CHUNK)
        except BlockingIOError:
            break
        if not data:
            break
        chunks.append(data)
    return chunks


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def supervise_child(
    conn: socket.socket,
    pid: int,
    started: float,
    timeout: object,
    out_r: int,
    err_r: int,
    res_r: int,
    reap_later: list,
) -> None:
    """Relay a forked request process's output to ``conn`` as frames until it exits (or its result is
    complete: then its pid goes to ``reap_later``), enforcing ``timeout``; then send the final frame."""
    deadline = started + float(timeout) if timeout else None  # type: ignore[arg-type]
    broken = [False]

    def send(data: bytes) -> None:
        if not broken[0]:
            try:
                conn.sendall(data)
            except OSError:
                broken[0] = True

    try:
        pidfd: int | None = os.pidfd_open(pid)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        pidfd = None
    poller = select.poll()
    names = {out_r: "stdout", err_r: "stderr", res_r: "result"}
    for fd in names:
        poller.register(fd, select.POLLIN)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    # The host hanging up (it gave up on the request) shows as RDHUP on the connection.
    conn_fd = conn.fileno()
    poller.register(conn_fd, getattr(select, "POLLRDHUP", 0x2000) | select.POLLHUP)
    open_fds = set(names)
    result = bytearray()
    status: int | None = None
    timed_out = False
    early = False
    drain_until: float | None = None

    def child_exited(st: int) -> None:
        nonlocal status, drain_until
        status = st
        kill_group(pid)  # stragglers the handler left behind do not outlive the request
        drain_until = time.monotonic() + 0.2

    try:
        while True:
            if status is not None and not open_fds:
                break
            now = time.monotonic()
            if drain_until is not None:
                wait = drain_until - now
                if wait <= 0:
                    break
            elif deadline is not None and not timed_out:
                wait = deadline - time.perf_counter()
                if wait <= 0:
                    timed_out = True
                    kill_group(pid)
                    continue
            else:
                wait = None
            if pidfd is None:
                wait = 0.01 if wait is None else min(wait, 0.01)
            events = poller.poll(None if wait is None else max(0, int(wait * 1000) + 1))
            for fd, _ev in events:
                if fd == conn_fd:
                    poller.unregister(conn_fd)
                    broken[0] = True
                    kill_group(pid)  # nobody waits for this request any more
                    continue
                if fd == pidfd:
                    poller.unregister(pidfd)
                    _, st = os.waitpid(pid, 0)
                    child_exited(st)
                    continue
                data = os.read(fd, STREAM_CHUNK)
                if not data:
                    poller.unregister(fd)
                    open_fds.discard(fd)
                elif names[fd] == "result":
                    result += data
                    if status is None and frame_complete(result):
                        early = True
                else:
                    send(encode_frame({"type": names[fd]}, data))
            if early:
                # The child wrote its whole result: answer now and reap it after the response
                # (its exit, i.e. tearing down its address space, is off the critical path).
                # Output it wrote before the result is already in the pipes.
                for fd in (out_r, err_r):
                    if fd in open_fds:
                        for data in drain(fd):
                            send(encode_frame({"type": names[fd]}, data))
                reap_later.append(pid)
                break
            if pidfd is None and status is None:
                done, st = os.waitpid(pid, os.WNOHANG)
                if done:
                    child_exited(st)
    finally:
        if pidfd is not None:
            os.close(pidfd)
        if status is None and not early:
            kill_group(pid)
            _, status = os.waitpid(pid, 0)

    exit_code = 0 if status is None else exit_code_of(status)
    if timed_out:
        final = with_run_ms(
            {
                "type": "error",
                "kind": "timeout",
                "message": f"the handler did not return within {timeout} s; its process was killed",
            },
            started,
        )
    else:
        try:
            head, out = parse_frame_bytes(bytes(result))
            head.pop("body_len", None)
            head["exit_code"] = exit_code
            final = with_run_ms(head, started, out)
        except (ProtocolError, ValueError):
            if exit_code < 0:
                sig = -exit_code
                try:
                    name = signal.Signals(sig).name
                except ValueError:
                    name = str(sig)
                how = f"was killed by signal {name}"
                if sig == signal.SIGKILL:
                    how += " (possibly out of memory)"
            else:
                how = f"exited with code {exit_code}"
            final = with_run_ms(
                {
                    "type": "error",
                    "kind": "crash",
                    "exit_code": exit_code,
                    "message": f"the function process {how} before returning a result",
                },
                started,
            )
    send(final)


class Zygote:
    """Fork mode: every request runs in a child forked from this preloaded process, which never runs a
    request itself; the next request's child (the spare) is forked ahead of time, while nobody waits.

    ``run(header, body, started)`` runs one request in the child and returns its final frame;
    ``in_child(n)`` is called first in the ``n``-th child (reseeding, closing the parent's listener)."""

    def __init__(self, run: Callable[[dict, bytes, float], bytes], in_child: Callable[[int], None]) -> None:
        self._run = run
        self._in_child = in_child
        self._spare: Child | None = None
        self.forks = 0
        """Children forked so far (a seeded copy derives the n-th child's PRNG state from it)."""
        self._stragglers: list[int] = []
        """Process groups of finished requests whose processes may linger (killed after the response)."""

    def invoke(self, conn: socket.socket, header: dict, body: bytes) -> None:
        """Run the request in a child (the spare if there is one), relaying its frames to ``conn``."""
        timeout = header.get("timeout_s")
        child = self._spare
        self._spare = None
        request = encode_frame(header, body)
        started = time.perf_counter()
        if child is not None:
            try:
                write_all(child.req_w, request)
            except OSError:  # the spare died while idle: fork a fresh one
                child.discard()
                child = None
        if child is None:
            child = self._fork()
            write_all(child.req_w, request)
        os.close(child.req_w)
        child.req_w = -1
        try:
            supervise_child(
                conn, child.pid, started, timeout, child.out_r, child.err_r, child.res_r, self._stragglers
            )
        finally:
            child.close_fds()

    def relay(self, header: dict, body: bytes) -> bytes:
        """Run the request in a child as :meth:`invoke` does and return its final frame (output is not
        kept: the direct address has nobody on the host following the request)."""
        ours, theirs = socket.socketpair()
        frames: list[bytes] = []

        def collect() -> None:
            with contextlib.suppress(Exception):
                while True:
                    h, b = read_frame(ours)
                    if h.get("type") in ("result", "error"):
                        frames.append(encode_frame(h, b))
                        return

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        try:
            self.invoke(theirs, header, body)
        finally:
            with contextlib.suppress(OSError):
                theirs.shutdown(socket.SHUT_RDWR)
            reader.join(5.0)
            theirs.close()
            ours.close()
            self.reap_stragglers()
        if frames:
            return frames[0]
        return encode_frame({"type": "error", "kind": "crash", "message": "the request process died"})

    def reap_stragglers(self) -> None:
        while self._stragglers:
            pid = self._stragglers.pop()
            kill_group(pid)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def ensure_spare(self) -> None:
        """Fork the next request's child now (on failure, e.g. the pids limit, it is forked on demand)."""
        if self._spare is None:
            try:
                self._spare = self._fork()
            except OSError:
                self._spare = None

    def discard_spare(self) -> None:
        if self._spare is not None:
            self._spare.discard()
            self._spare = None

    def _fork(self) -> Child:
        """Fork a child that waits for one request frame on a pipe, runs it and exits."""
        req_r, req_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.flush()
        self.forks += 1
        pid = os.fork()
        if pid == 0:
            self._child(req_r, (req_w, out_r, err_r, res_r), out_w, err_w, res_w)  # never returns
        for fd in (req_r, out_w, err_w, res_w):
            os.close(fd)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        return Child(pid, req_w, out_r, err_r, res_r)

    def _child(self, req_r: int, parents: tuple, out_w: int, err_w: int, res_w: int) -> None:
        code = 0
        try:
            self._in_child(self.forks)
            os.setpgid(0, 0)
            for fd in parents:
                os.close(fd)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
                signal.signal(sig, signal.SIG_DFL)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.close(out_w)
            os.close(err_w)
            sys.stdout = io.TextIOWrapper(
                io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="replace", line_buffering=True
            )
            sys.stderr = io.TextIOWrapper(
                io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="replace", line_buffering=True
            )
            try:
                header, body = read_frame_fd(req_r)
            except (ProtocolError, OSError):
                os._exit(0)  # the agent went away (or discarded this spare) before a request came
            os.close(req_r)
            started = time.perf_counter()
            os.environ.update({str(k): str(v) for k, v in (header.get("env") or {}).items()})
            final = self._run(header, body, started)
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            write_all(res_w, final)
        except BaseException:
            code = 70
            import traceback

            with contextlib.suppress(BaseException):
                write_all(
                    res_w,
                    encode_frame(
                        {
                            "type": "error",
                            "kind": "crash",
                            "message": "agent failure in the request process",
                            "traceback": traceback.format_exc(),
                        }
                    ),
                )
        finally:
            os._exit(code)
