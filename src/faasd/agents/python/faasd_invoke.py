"""In-process invocation for the Python agent (:class:`Invoker`): the user's handler called once in the
agent's own process, bounded by the request's timeout (SIGALRM), and its outcome as the request's final
frame. Standard library only (Python 3.8+)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time

import faasd_runtime
from faasd_fork import timed
from faasd_frames import encode_frame
from faasd_results import FrameStream, InvalidResponse, exc_message, normalize_result, user_traceback


class _HandlerTimeout(BaseException):
    """Raised in the main thread by SIGALRM; a BaseException so ``except Exception`` cannot eat it."""


class Invoker:
    """Runs the handler once in this process and turns its outcome into the request's final frame: a
    ``result``, or an ``error`` of kind ``timeout``, ``invalid_response`` or ``exception``.

    ``set_handler(fn)`` gives it the user's handler (``handler`` stays None if that failed to load).
    ``invoke(conn, header, body)`` runs a request with its env, streaming its output to ``conn`` as frames,
    then its final frame; ``run(header, body, send)`` does the same with the output going to ``send(kind,
    data)`` and returns the final frame's header and body; ``relay(header, body)`` leaves the output alone
    (the sandbox's log) and returns the encoded final frame. ``run_in_child(header, body, started)`` is
    :class:`faasd_fork.Zygote`'s ``run`` (no alarm there: the zygote bounds the child). ``on_alarm`` is the
    SIGALRM handler: it interrupts the handler only while one runs here."""

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.handler = None
        self.takes_context = True
        self._loop = None  # asyncio loop for async handlers, created on first use
        self._loop_pid = 0
        self._in_handler = False

    def set_handler(self, fn: object) -> None:
        self.handler = fn
        self.takes_context = _accepts_two_args(fn)

    def invoke(self, conn: socket.socket, header: dict, body: bytes) -> None:
        """Run the request, its output sent to ``conn`` as it is written (nothing more once it broke)."""
        broken = [False]

        def send(kind: str, data: bytes) -> None:
            if broken[0]:
                return
            try:
                conn.sendall(encode_frame({"type": kind}, data))
            except OSError:
                broken[0] = True

        final = encode_frame(*self.run(header, body, send))
        if not broken[0]:
            with contextlib.suppress(OSError):
                conn.sendall(final)

    def run(self, header: dict, body: bytes, send) -> tuple:
        """Run one request in this process with its output going to ``send(kind, data)`` as it is
        written; returns the final frame's header and body (not encoded)."""
        lock = threading.Lock()
        out = FrameStream(send, "stdout", lock)
        err = FrameStream(send, "stderr", lock)
        env = header.get("env")
        saved_env = {k: os.environ.get(k) for k in env} if env else None
        saved_stdio = (sys.stdout, sys.stderr)
        run = self._timed_handler(header, body, header.get("timeout_s"))
        started = time.perf_counter()
        if env:
            os.environ.update({str(k): str(v) for k, v in env.items()})
        sys.stdout, sys.stderr = out, err
        try:
            final = self._final(run, started)
        finally:
            sys.stdout, sys.stderr = saved_stdio
            self._in_handler = False
            for k, v in (saved_env or {}).items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        out.flush()
        err.flush()
        return final

    def relay(self, header: dict, body: bytes) -> bytes:
        """Run one request in this process, its output not captured, and return its final frame."""
        run = self._timed_handler(header, body, header.get("timeout_s"))
        started = time.perf_counter()
        try:
            return encode_frame(*self._final(run, started))
        finally:
            self._in_handler = False

    def run_in_child(self, header: dict, body: bytes, started: float) -> bytes:
        """A request in a forked child (:class:`faasd_fork.Zygote`): the handler's final frame."""

        def run() -> object:
            event, context = self._make_event(header, body)
            return self._call_handler(event, context)

        return encode_frame(*self._final(run, started))

    def on_alarm(self, signum: int, frame: object) -> None:
        if self._in_handler:
            raise _HandlerTimeout()

    # -- one handler call
    def _make_event(self, header: dict, body: bytes) -> tuple[object, object]:
        raw_headers = header.get("headers") or {}
        headers = (
            {str(k).lower(): str(v) for k, v in raw_headers.items()} if isinstance(raw_headers, dict) else {}
        )
        event = faasd_runtime.Event(
            body=body,
            headers=headers,
            method=str(header.get("method") or "POST"),
            path=str(header.get("path") or "/"),
            query=str(header.get("query") or ""),
        )
        timeout = header.get("timeout_s")
        context = faasd_runtime.Context(
            request_id=str(header.get("id") or ""),
            function_name=self.function_name,
            timeout_s=float(timeout) if timeout else None,
        )
        return event, context

    def _call_handler(self, event: object, context: object) -> object:
        assert self.handler is not None
        result = self.handler(event, context) if self.takes_context else self.handler(event)
        if hasattr(result, "__await__"):
            import asyncio  # only functions with async handlers pay for it

            if self._loop is None or self._loop_pid != os.getpid() or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
                self._loop_pid = os.getpid()
            result = self._loop.run_until_complete(_await(result))
        return result

    def _timed_handler(self, header: dict, body: bytes, timeout: float | None):
        """The handler call of one request, bounded by ``timeout`` (SIGALRM), as a thunk for
        :meth:`_final`."""

        def run() -> object:
            event, context = self._make_event(header, body)
            self._in_handler = True
            if timeout:
                signal.setitimer(signal.ITIMER_REAL, float(timeout))
            try:
                return self._call_handler(event, context)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                self._in_handler = False

        return run

    def _final(self, fn, run_started: float) -> tuple:
        """Run ``fn`` (which calls the handler) and turn its outcome into a result or error frame's header
        and body (not encoded)."""
        try:
            value = fn()
            status, headers, out = normalize_result(value)
            header = {"type": "result", "status": status, "headers": headers}
            return timed(header, run_started, out)
        except _HandlerTimeout:
            self._loop = None  # an interrupted event loop is not reusable; drop it
            return timed(
                {
                    "type": "error",
                    "kind": "timeout",
                    "message": "the handler did not return before its timeout",
                },
                run_started,
            )
        except InvalidResponse as exc:
            return timed({"type": "error", "kind": "invalid_response", "message": str(exc)}, run_started)
        except BaseException as exc:  # includes SystemExit from sys.exit() in the handler
            return timed(
                {
                    "type": "error",
                    "kind": "exception",
                    "exception": type(exc).__name__,
                    "message": exc_message(exc),
                    "traceback": user_traceback(exc),
                },
                run_started,
            )


async def _await(aw: object) -> object:
    return await aw  # type: ignore[misc]


def _accepts_two_args(fn: object) -> bool:
    """False for a plain ``def handle(req)`` (OpenFaaS classic style): call it without ``context``."""
    code = getattr(fn, "__code__", None)
    if code is None or getattr(fn, "__self__", None) is not None:
        return True
    varargs = bool(code.co_flags & 0x04)
    return varargs or code.co_argcount >= 2
