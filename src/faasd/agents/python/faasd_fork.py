"""Fork mode of the Python agent: the request process forked from the preloaded agent (the "zygote"), and
relaying what it writes (stdout, stderr, its result frame) back to the host, with the request's timeout.
Standard library only (Python 3.8+)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time

from faasd_frames import ProtocolError, encode_frame, frame_complete, parse_frame_bytes

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
