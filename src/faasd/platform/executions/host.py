"""What the async queue and streaming sessions use of the execution service (:class:`ExecutionHost`).

:class:`~faasd.platform.executions.service.ExecutionService` satisfies it; the queue and the sessions are
typed against this Protocol, so neither imports the service that owns them.
"""

from __future__ import annotations

from typing import Protocol

from faasd.platform.executions.journal import ExecutionJournal
from faasd.platform.functions import FunctionService
from faasd.platform.invocation import Outcome
from faasd.platform.metrics import Metrics
from faasd.platform.runner import Handle
from faasd.runtime.agent_client import InvokeRequest
from faasd.state import Database, Execution, Function


class ExecutionHost(Protocol):
    db: Database
    functions: FunctionService
    metrics: Metrics
    journal: ExecutionJournal
    max_async_concurrency: int
    poll_interval_s: float
    callback_timeout_s: float

    def get(self, execution_id: str) -> Execution:
        """The execution record ``execution_id`` (404 if unknown)."""
        ...

    def finish(
        self,
        ex_id: str,
        fn_name: str,
        outcome: Outcome | None,
        *,
        status: str | None = None,
        error: str | None = None,
        durable: bool = False,
    ) -> None:
        """Record the end of an execution and count the invocation."""
        ...

    async def run(self, fn: Function, req: InvokeRequest) -> Outcome:
        """Run ``req`` on a worker of ``fn`` (acquired and released here)."""
        ...

    def ran(self, outcome: Outcome, fn: Function, handle: Handle, ex_id: str) -> Outcome:
        """Complete ``outcome`` with how it ran and count it."""
        ...
