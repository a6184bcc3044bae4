"""Executions: sync, async (persisted before 202, drained by a background loop) and streaming invocations.

Every invocation gets an ``executions`` row. Async rows are written with the full request before the
caller gets its 202, so a crash loses nothing: :meth:`ExecutionService.reconcile` re-queues rows a dead
daemon left ``running`` (and fails sync ones with a clear reason).

Sync and stream rows (and ``functions.invocation_count``) are written behind the hot path by
:class:`ExecutionJournal`: batched, in order, at most :data:`JOURNAL_DELAY_S` later, before any database
session is opened (so every read sees them) and at shutdown. A daemon crash can lose only the last
:data:`JOURNAL_DELAY_S` of sync/stream records, whose callers lose their connection anyway.

Modules: :mod:`.service` (the service, sync invocations), :mod:`.streaming` (stream sessions),
:mod:`.async_queue` (the async queue, reconcile, pruning), :mod:`.webhooks` (callbacks),
:mod:`.journal` (the write-behind journal), :mod:`.records` (stored form, JSON view). The types the
API hands in and gets back (``Invocation``, ``Outcome``) are in :mod:`faasd.platform.invocation`.
"""

from faasd.platform.executions.async_queue import AsyncQueue
from faasd.platform.executions.journal import JOURNAL_DELAY_S, ExecutionJournal
from faasd.platform.executions.records import (
    EXECUTION_RETENTION_S,
    MAX_ASYNC_ATTEMPTS,
    STORED_BODY_LIMIT,
    STORED_LOG_LIMIT,
    ReconcileReport,
    StreamStart,
    encode_body,
    execution_dict,
    forwardable_headers,
    new_execution_id,
)
from faasd.platform.executions.service import ExecutionService
from faasd.platform.executions.streaming import StreamSession
from faasd.platform.invocation import Outcome

__all__ = [
    "EXECUTION_RETENTION_S",
    "JOURNAL_DELAY_S",
    "MAX_ASYNC_ATTEMPTS",
    "STORED_BODY_LIMIT",
    "STORED_LOG_LIMIT",
    "AsyncQueue",
    "ExecutionJournal",
    "ExecutionService",
    "Outcome",
    "ReconcileReport",
    "StreamSession",
    "StreamStart",
    "encode_body",
    "execution_dict",
    "forwardable_headers",
    "new_execution_id",
]
