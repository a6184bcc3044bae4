"""The async invocation queue: rows ``queued`` in the database, claimed and run by a background loop.

Async rows are committed with the full request before the caller gets its 202 (by
:meth:`ExecutionService.submit`), so a crash loses nothing: :meth:`AsyncQueue.reconcile` re-queues rows
a dead daemon left ``running`` (and fails sync ones with a clear reason). The loop also prunes finished
executions older than :data:`EXECUTION_RETENTION_S`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from datetime import timedelta

from sqlalchemy import delete, func, or_, select, update

from faasd.errors import CapacityError, FaasdError, NotFoundError
from faasd.platform.executions.host import ExecutionHost
from faasd.platform.executions.records import (
    EXECUTION_RETENTION_S,
    MAX_ASYNC_ATTEMPTS,
    PRUNE_INTERVAL_S,
    ReconcileReport,
)
from faasd.platform.executions.webhooks import deliver_callback
from faasd.runtime.agent_client import InvokeRequest
from faasd.state import Execution
from faasd.state.models import utcnow

log = logging.getLogger(__name__)


class AsyncQueue:
    """Runs the ``queued`` async executions of an :class:`ExecutionService`, at most
    ``service.max_async_concurrency`` at a time."""

    def __init__(self, service: ExecutionHost) -> None:
        self.service = service
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    def wake(self) -> None:
        """Something was queued: claim it now rather than at the next poll."""
        self._wakeup.set()

    # -- the rows ----------------------------------------------------------------------------
    def reconcile(self) -> ReconcileReport:
        """Fix rows left by a daemon that died: async ``running`` → ``queued`` (or failed after
        :data:`MAX_ASYNC_ATTEMPTS`); sync/stream ``running`` → failed (their caller is gone)."""
        report = ReconcileReport()
        with self.service.db.session() as s:
            for ex in s.scalars(select(Execution).where(Execution.status == "running")):
                ex_id = ex.id
                if ex.kind == "async" and ex.attempts < MAX_ASYNC_ATTEMPTS:
                    ex.status = "queued"
                    ex.started_at = None
                    ex.not_before = None
                    report.requeued.append(ex_id)
                else:
                    ex.status = "failed"
                    ex.finished_at = utcnow()
                    ex.error = (
                        f"the daemon stopped during all {ex.attempts} attempt(s) of this async invocation; "
                        "gave up"
                        if ex.kind == "async"
                        else "the daemon stopped while this invocation was running; the caller got no "
                        "answer, retry it"
                    )
                    report.failed.append(ex_id)
        if report.requeued or report.failed:
            log.info("reconciled executions: requeued=%s failed=%s", report.requeued, report.failed)
        return report

    def _claim(self, limit: int) -> builtins.list[Execution]:
        now = utcnow()
        claimed: builtins.list[Execution] = []
        with self.service.db.session() as s:
            ids = list(
                s.scalars(
                    select(Execution.id)
                    .where(Execution.status == "queued")
                    .where(or_(Execution.not_before.is_(None), Execution.not_before <= now))
                    .order_by(Execution.created_at)
                    .limit(limit)
                )
            )
            for ex_id in ids:
                res = s.execute(
                    update(Execution)
                    .where(Execution.id == ex_id, Execution.status == "queued")
                    .values(status="running", started_at=now, attempts=Execution.attempts + 1)
                )
                if getattr(res, "rowcount", 0) == 1:
                    ex = s.get(Execution, ex_id)
                    if ex is not None:
                        claimed.append(ex)
        return claimed

    def prune(self, older_than_s: float = EXECUTION_RETENTION_S) -> int:
        """Delete finished executions older than ``older_than_s``; returns how many."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        with self.service.db.session() as s:
            res = s.execute(
                delete(Execution).where(
                    Execution.status.in_(("succeeded", "failed", "timeout")), Execution.finished_at < cutoff
                )
            )
            return int(getattr(res, "rowcount", 0) or 0)

    def queued_count(self) -> int:
        with self.service.db.session() as s:
            q = select(func.count()).select_from(Execution).where(Execution.status == "queued")
            return int(s.scalar(q) or 0)

    async def _run_async(self, ex: Execution) -> None:
        svc = self.service
        try:
            fn = svc.functions.get(ex.function)
        except NotFoundError:
            svc.finish(
                ex.id,
                ex.function,
                None,
                status="failed",
                error=f"function {ex.function!r} was deleted before this invocation ran",
                durable=True,
            )
            await deliver_callback(svc.get(ex.id), svc.callback_timeout_s)
            return
        req = InvokeRequest(  # the stored request is already what the function may see
            body=ex.request_body or b"",
            headers=dict(ex.request_headers),
            method=ex.request_method,
            path=ex.request_path,
            query=ex.request_query,
            timeout_s=fn.timeout_s,
            request_id=ex.id,
        )
        try:
            outcome = await svc.run(fn, req)
        except CapacityError as exc:
            with self.service.db.session() as s:
                row = s.get(Execution, ex.id)
                if row is not None:
                    row.status = "queued"
                    row.attempts = max(0, row.attempts - 1)
                    row.started_at = None
                    row.not_before = utcnow() + timedelta(seconds=exc.retry_after_s)
            return
        except FaasdError as exc:
            svc.metrics.errors.labels(exc.code).inc()
            svc.finish(ex.id, ex.function, None, status="failed", error=exc.message, durable=True)
        except asyncio.CancelledError:
            raise  # shutdown: stays 'running', reconcile() re-queues it on the next start
        except Exception as exc:
            log.exception("async execution %s failed unexpectedly", ex.id)
            svc.finish(
                ex.id, ex.function, None, status="failed", error=f"internal error: {exc!r}", durable=True
            )
        else:
            svc.finish(ex.id, ex.function, outcome, durable=True)
        await deliver_callback(svc.get(ex.id), svc.callback_timeout_s)

    # -- the loop ----------------------------------------------------------------------------
    async def drain_once(self) -> int:
        """Claim and start as many queued executions as there is room for; returns how many started."""
        room = self.service.max_async_concurrency - len(self._tasks)
        if room <= 0:
            return 0
        batch = self._claim(room)
        for ex in batch:
            task = asyncio.get_running_loop().create_task(self._run_async(ex))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        return len(batch)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wakeup.set()

    async def _loop(self) -> None:
        svc = self.service
        last_prune = 0.0
        while not self._stopping:
            try:
                await self.drain_once()
                svc.metrics.queued.set(self.queued_count())
                if time.monotonic() - last_prune >= PRUNE_INTERVAL_S:
                    last_prune = time.monotonic()
                    if n := self.prune():
                        log.info("deleted %d finished execution(s) older than the retention period", n)
            except Exception:
                log.exception("async execution loop iteration failed")
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.service.poll_interval_s):
                    await self._wakeup.wait()

    def start(self) -> None:
        if self._loop_task is None:
            self._stopping = False
            self.service.journal.reopen()
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def wait_idle(self, timeout_s: float = 30.0) -> None:
        """Wait until nothing is queued or running (tests, graceful shutdown)."""
        async with asyncio.timeout(timeout_s):
            while self._tasks or self.queued_count():
                await self.drain_once()
                if self._tasks:
                    await asyncio.wait(set(self._tasks), timeout=0.5)
                else:
                    await asyncio.sleep(0.05)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop the loop; running async executions get ``grace_s`` to finish, then are cancelled
        (they stay ``running`` and are re-queued by :meth:`reconcile` on the next start)."""
        self._stopping = True
        self._wakeup.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        self.service.journal.close()
