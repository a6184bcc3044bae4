"""Typed request and response objects of the faasd API (see ``docs/API.md``).

Response objects ignore fields they do not know, so an older SDK keeps working against a newer daemon;
request objects drop ``None`` fields when serialised (``to_json``) so the server's defaults apply.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Literal

import msgspec

from faasd.sdk._codec import convert as convert
from faasd.sdk._codec import request_from as request_from
from faasd.sdk._codec import to_builtins as to_builtins
from faasd.sdk._codec import without_none
from faasd.sdk.results import InvokeResult as InvokeResult
from faasd.sdk.results import StreamEvent as StreamEvent
from faasd.sdk.results import StreamOutput as StreamOutput
from faasd.sdk.results import StreamResult as StreamResult
from faasd.sdk.results import StreamStart as StreamStart

Runtime = Literal["python", "node", "exec", "http"]
Mode = Literal["ephemeral", "cached", "checkpointed", "branched", "persistent"]
ExecutionStatus = Literal["queued", "running", "succeeded", "failed", "timeout"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "timeout"})


class _Model(msgspec.Struct, kw_only=True):  # each subclass says kw_only too: msgspec does not inherit it
    """The base of every API object: a ``msgspec.Struct`` (typed attributes, validated when read from an
    answer), not a pydantic model: class creation and validation need no schema building, so ``faas``
    commands start without pydantic (see the README's footprint section)."""

    def to_json(self) -> dict[str, Any]:
        """The request/response body as JSON-ready data, without the fields that are None."""
        return without_none(self)


class Limits(_Model, kw_only=True):
    memory_mb: int | None = None
    cpu_cores: float | None = None
    pids: int | None = None
    timeout_s: float | None = None
    disk_mb: int | None = None


class ScaleBounds(_Model, kw_only=True):
    min: int | None = None
    max: int | None = None


class PoolStatus(_Model, kw_only=True):
    replicas: int = 0
    busy: int = 0
    queued: int = 0
    min: int | None = None
    max: int | None = None


class FunctionSpec(_Model, kw_only=True):
    """What you deploy. Only ``name`` and ``image`` are required; the daemon fills in the rest."""

    name: str
    image: str
    namespace: str | None = None
    """The namespace the function lives in (default: the key's, else the client's, else ``openfaas-fn``)."""
    runtime: str | None = None
    handler: str | None = None
    command: list[str] | None = None
    port: int | None = None
    env: dict[str, str] = msgspec.field(default_factory=dict)
    secrets: list[str] = msgspec.field(default_factory=list)
    limits: Limits | None = None
    scale: ScaleBounds | None = None
    concurrency: int | None = None
    queue_size: int | None = None
    idle_ttl_s: float | None = None
    mode: str | None = None
    branch_from: str | None = None
    """mode ``branched``: the snapshot every worker is restored from."""
    network: str | None = None
    """``none`` (only the sandbox's own loopback, the default) or ``egress`` (outgoing connections)."""
    isolation: str | None = None
    """``runc`` or ``gvisor`` (runsc); default: the daemon's ``FAASD_ISOLATION``."""
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    annotations: dict[str, str] = msgspec.field(default_factory=dict)


class Function(FunctionSpec, kw_only=True):
    """A deployed function as the daemon reports it."""

    created_at: datetime | None = None
    updated_at: datetime | None = None
    invocation_count: int | None = None
    status: PoolStatus | None = None
    address: str | None = None
    """The function's direct address on the daemon host's loopback (``lo:faas``), or None."""
    direct_url: str | None = None
    """``http://<address>[:port]/``: plain HTTP straight to the function's workers, no gateway."""

    def spec(self) -> FunctionSpec:
        """The deployable part, e.g. to change a field and ``update()``."""
        return convert(to_builtins(self), FunctionSpec)


class ScaleResult(_Model, kw_only=True):
    name: str
    namespace: str | None = None
    min: int | None = None
    max: int | None = None
    replicas: int | None = None


class Execution(_Model, kw_only=True):
    id: str
    function: str | None = None
    namespace: str | None = None
    kind: str | None = None
    status: str
    http_status: int | None = None
    result: str | None = None
    result_encoding: str | None = None
    error: str | None = None
    exit_code: int | None = None
    cold_start: bool | None = None
    init_ms: float | None = None
    wait_ms: float | None = None
    run_ms: float | None = None
    callback_url: str | None = None
    attempts: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def body(self) -> bytes:
        """The function's response body, decoded from ``result``/``result_encoding``."""
        if self.result is None:
            return b""
        if self.result_encoding == "base64":
            return base64.b64decode(self.result)
        return self.result.encode()


class ExecutionAccepted(_Model, kw_only=True):
    execution_id: str
    status: str = "queued"
    status_url: str | None = None


class ExecutionLogs(_Model, kw_only=True):
    execution_id: str
    stdout: str = ""
    stderr: str = ""


class ExecuteRequest(_Model, kw_only=True):
    """A one-off run: either ``command`` (argv list or shell string) or ``code`` + ``language``."""

    command: list[str] | str | None = None
    code: str | None = None
    language: str | None = None
    image: str | None = None
    env_vars: dict[str, str] | None = None
    timeout_ms: int | None = None
    memory_mb: int | None = None
    cpu_cores: float | None = None
    working_dir: str | None = None
    stdin: str | None = None
    mode: str | None = None
    disk_mb: int | None = None
    pids: int | None = None
    isolation: str | None = None
    runtime: str | None = None
    cache_key: str | None = None
    snapshot_id: str | None = None
    branch_from: str | None = None
    workspace: str | None = None
    ttl_s: float | None = None


class ExecuteResult(_Model, kw_only=True):
    request_id: str
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    duration_ms: float | None = None
    timed_out: bool = False
    oom_killed: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    isolation: str | None = None
    output: str | None = None
    """The seed platform's name for ``stdout``."""
    logs: str | None = None
    """The seed platform's name for ``stderr``."""
    error: str | None = None
    """Why the run failed (non-zero exit, timeout, OOM kill), or None."""
    mode: str | None = None
    runtime: str | None = None
    cache_hit: bool = False
    start: str | None = None
    """``cold``, ``warm`` (a pre-warmed sandbox), ``restore`` (from a snapshot) or None (cache hit)."""
    snapshot: dict[str, Any] | None = None
    workspace: dict[str, Any] | None = None
    branch_from: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class Secret(_Model, kw_only=True):
    name: str
    namespace: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ApiKey(_Model, kw_only=True):
    id: str
    name: str | None = None
    scopes: list[str] = msgspec.field(default_factory=list)
    rate_limit_rps: float | None = None
    burst: int | None = None
    namespace: str | None = None
    """The one namespace the key acts in (None: every namespace)."""
    created_at: datetime | None = None
    last_used_at: datetime | None = None


class NamespaceQuotas(_Model, kw_only=True):
    """A namespace's bounds (None: unlimited); see docs/API.md "Namespaces" for what each counts."""

    max_sandboxes: int | None = None
    max_memory_mb: int | None = None
    max_disk_mb: int | None = None
    max_snapshots: int | None = None


class NamespaceUsage(_Model, kw_only=True):
    sandboxes: int = 0
    memory_mb: int = 0
    disk_mb: int = 0
    snapshots: int = 0


class Namespace(_Model, kw_only=True):
    """A tenant: it owns functions, secrets, snapshots, instances, executions and jobs."""

    name: str
    quotas: NamespaceQuotas = msgspec.field(default_factory=NamespaceQuotas)
    usage: NamespaceUsage = msgspec.field(default_factory=NamespaceUsage)
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class CreatedApiKey(ApiKey, kw_only=True):
    key: str
    """The plaintext key: shown once, store it now."""


class LogLine(_Model, kw_only=True):
    function: str | None = None
    execution_id: str | None = None
    stream: str | None = None
    text: str = ""
    timestamp: datetime | None = None
    instance: str | None = None


class Health(_Model, kw_only=True):
    status: str
    version: str | None = None


class Info(_Model, kw_only=True):
    version: str | None = None
    auth: bool | None = None
    max_payload_bytes: int | None = None
    runtimes: list[str] = msgspec.field(default_factory=list)
    modes: list[str] = msgspec.field(default_factory=list)
    execute: bool | None = None
    source_deploy: bool = False
    """True when deploy requests may carry a source directory (multipart upload)."""
    isolation: str | None = None
    """The daemon's default isolation (``FAASD_ISOLATION``)."""
    isolations: list[str] = msgspec.field(default_factory=list)
    """Isolation backends this daemon can run (``gvisor`` only when runsc is installed)."""


# -- snapshots, restored sandboxes, merges ------------------------------------------------------------
class Snapshot(_Model, kw_only=True):
    id: str
    namespace: str | None = None
    created_at: str | None = None
    parent: str | None = None
    function: str | None = None
    source_sandbox: str | None = None
    kind: str = "process"
    """``process`` (CRIU image + files: restorable) or ``filesystem`` (files only, e.g. a merge)."""
    restorable: bool = True
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    sizes: dict[str, int] = msgspec.field(default_factory=dict)
    merge: dict[str, Any] | None = None
    children: list[str] = msgspec.field(default_factory=list)
    in_use_by: list[str] = msgspec.field(default_factory=list)


class RestoredSandbox(_Model, kw_only=True):
    id: str
    namespace: str | None = None
    snapshot_id: str
    function: str | None = None
    alive: bool = True
    restore_ms: float | None = None
    invocations: int = 0
    seed: int | None = None
    """The branch/restore seed this copy was started with (None: reseeded from the kernel)."""
    copy_index: int = 0
    """Index of this copy in its branch (0 for a restore)."""
    created_at: str | None = None


class MergeConflict(_Model, kw_only=True):
    path: str
    kind: str
    sides: dict[str, str] = msgspec.field(default_factory=dict)
    resolution: str = ""
    kept_copies: dict[str, str] = msgspec.field(default_factory=dict)


class MergeReport(_Model, kw_only=True):
    strategy: str
    branches: list[str] = msgspec.field(default_factory=list)
    taken: dict[str, list[str]] = msgspec.field(default_factory=dict)
    identical: list[str] = msgspec.field(default_factory=list)
    conflicts: list[MergeConflict] = msgspec.field(default_factory=list)
    dropped: dict[str, list[str]] = msgspec.field(default_factory=dict)
    result: str = ""


class MergeResult(_Model, kw_only=True):
    snapshot: Snapshot
    report: MergeReport
    base: str | None = None
    """The common base snapshot the branches were merged against."""
    branches: list[str] = msgspec.field(default_factory=list)
    """The snapshot each branch was resolved to (live sandboxes/instances are snapshotted)."""


class SnapshotGcReport(_Model, kw_only=True):
    removed_blobs: int = 0
    freed_bytes: int = 0
    kept_blobs: int = 0
    removed_tmp: int = 0
    removed_materialized: int = 0


# ------------------------------------------------------------------------------------- instances, jobs


class InstancePort(_Model, kw_only=True):
    internal_port: int
    protocol: str = "http"
    subdomain: str | None = None
    host_port: int | None = None
    url: str | None = None


class Instance(_Model, kw_only=True):
    id: str
    namespace: str | None = None
    name: str | None = None
    image: str | None = None
    source_snapshot: str | None = None
    fs_snapshot: str | None = None
    status: str
    auto_paused: bool = False
    sandbox_id: str | None = None
    cpu_cores: float = 1.0
    memory_mb: int = 512
    disk_gb: float = 1.0
    pids: int | None = None
    isolation: str | None = None
    ttl_s: float | None = None
    env: dict[str, str] = {}
    ports: list[InstancePort] = []
    error: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    last_active_at: str | None = None


class InstanceExecResult(_Model, kw_only=True):
    exit_code: int
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    oom_killed: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_ms: float = 0.0


class UploadResult(_Model, kw_only=True):
    target_path: str
    files: int
    bytes: int


class Job(_Model, kw_only=True):
    job_id: str
    namespace: str | None = None
    type: int
    type_name: str
    status: str
    args: dict[str, Any] = {}
    result: Any = None
    error: dict[str, Any] | None = None
    created_at: str | None = None
    finished_at: str | None = None


class ImageLayer(_Model, kw_only=True):
    digest: str
    diff_id: str
    chain_id: str
    media_type: str
    size: int


class Image(_Model, kw_only=True):
    """An image in the daemon's store (``pull_image``)."""

    id: str
    short_id: str
    manifest_digest: str
    refs: list[str] = msgspec.field(default_factory=list)
    architecture: str | None = None
    os: str | None = None
    created: str | None = None
    size: int = 0
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    layers: list[ImageLayer] = msgspec.field(default_factory=list)
    leases: list[str] = msgspec.field(default_factory=list)


class PushResult(_Model, kw_only=True):
    """What ``push_image`` sent: the manifest digest the registry serves, and what happened to each blob."""

    ref: str
    digest: str
    size: int
    uploaded: list[str] = msgspec.field(default_factory=list)
    mounted: list[str] = msgspec.field(default_factory=list)
    existing: list[str] = msgspec.field(default_factory=list)
