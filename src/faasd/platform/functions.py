"""Function records: validation (pydantic) and CRUD on the database."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import select

from faasd.errors import ConflictError, InvalidInputError, IsolationUnsupportedError, NotFoundError
from faasd.platform.env import EnvVars
from faasd.platform.namespaces import DEFAULT_NAMESPACE, check_id_length, function_id, split_function_id
from faasd.state import Database, Function
from faasd.state.models import iso

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
SECRET_NAME_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,251}[a-zA-Z0-9])?$")
RUNTIMES = ("python", "node", "exec", "http")
MODES = ("ephemeral", "cached", "checkpointed", "branched")
RESERVED_MODES = ("persistent",)
BRANCH_FROM_ANNOTATION = "faasd.branch_from"
"""Where a ``branched`` function's snapshot id is kept (annotations of the function record)."""
NETWORK_ANNOTATION = "faasd.network"
"""Where a function's network mode is kept when it is not the default ``none``."""
ISOLATION_ANNOTATION = "faasd.isolation"
"""Where a function's isolation backend is kept (``runc`` or ``gvisor``)."""
INTERNAL_ANNOTATIONS = (BRANCH_FROM_ANNOTATION, NETWORK_ANNOTATION, ISOLATION_ANNOTATION)
NETWORK_MODES = ("none", "egress")
ISOLATIONS = ("runc", "gvisor")
Isolation = Literal["runc", "gvisor"]
GVISOR_RUNTIMES = ("python", "exec")
"""Function runtimes that work under gVisor: the python agent listens on a Unix socket that runsc creates on
the host (``--host-uds=create``, in the sandbox's private io dir); an exec function is a ``runsc exec`` per
request. Not ``http`` (the server's port lives in gVisor's own network stack, which the host cannot reach)
and not ``node`` (on this host's runsc, node 18 aborts at start-up: its worker threads cannot be created)."""
_GVISOR_WHY = {
    "http": "the server's port lives in gVisor's own network stack, which the host cannot connect into",
    "node": "node aborts at start-up under this host's gVisor (its worker threads cannot be created)",
}


def oci_runtime(isolation: str) -> Literal["runc", "runsc"]:
    """The OCI runtime of an isolation backend: ``gvisor`` → ``runsc``, else ``runc``."""
    return "runsc" if isolation == "gvisor" else "runc"


def check_gvisor_function(runtime: str, network: str, mode: str) -> None:
    """Raise :class:`IsolationUnsupportedError` (400) for what a gVisor function cannot do."""
    if runtime not in GVISOR_RUNTIMES:
        raise IsolationUnsupportedError(
            f"isolation 'gvisor' does not support runtime {runtime!r}: "
            f"{_GVISOR_WHY.get(runtime, 'untested')}; use runtime python or exec, or isolation 'runc'",
            isolation="gvisor",
            runtime=runtime,
        )
    if network != "none":
        raise IsolationUnsupportedError(
            "isolation 'gvisor' supports only network 'none': gVisor runs its own network stack with "
            "loopback only; use isolation 'runc' for egress",
            isolation="gvisor",
            network=network,
        )
    if mode not in ("ephemeral", "cached"):
        raise IsolationUnsupportedError(
            f"isolation 'gvisor' does not support mode {mode!r}: it snapshots a live worker, and "
            "gVisor's checkpoint stops the sandbox it captures (runsc --leave-running does not work "
            "here); use mode 'cached' or 'ephemeral', or isolation 'runc'",
            isolation="gvisor",
            mode=mode,
        )


def check_name(name: str, what: str = "function") -> str:
    if not NAME_RE.match(name):
        raise InvalidInputError(
            f"{what} name {name!r} is invalid: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit",
            name=name,
        )
    return name


class LimitsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    memory_mb: int = Field(default=256, ge=16, le=65536)
    cpu_cores: float = Field(default=1.0, ge=0.05, le=64)
    pids: int = Field(default=256, ge=8, le=65536)
    timeout_s: float = Field(default=30.0, ge=0.1, le=3600)
    disk_mb: int = Field(default=1024, ge=16, le=1048576)


class ScaleModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    min: int = Field(default=0, ge=0, le=100)
    max: int = Field(default=4, ge=1, le=100)

    @model_validator(mode="after")
    def _bounds(self) -> ScaleModel:
        if self.min > self.max:
            raise ValueError(f"scale.min ({self.min}) must not exceed scale.max ({self.max})")
        return self


class FunctionSpec(BaseModel):
    """The user-facing description of a function (request body of create/update)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=63)
    namespace: str | None = Field(default=None, max_length=63)
    """The namespace the function lives in (default: the key's, else ``?namespace=``, else
    ``openfaas-fn``); names are unique per namespace."""
    image: str = Field(min_length=1, max_length=512)
    runtime: Literal["python", "node", "exec", "http"] = "python"
    handler: str | None = Field(default=None, max_length=256)
    command: list[str] | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    env: EnvVars = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)
    limits: LimitsModel = Field(default_factory=LimitsModel)
    scale: ScaleModel = Field(default_factory=ScaleModel)
    concurrency: int = Field(default=1, ge=1, le=1000)
    queue_size: int = Field(default=100, ge=0, le=10000)
    idle_ttl_s: float = Field(default=300.0, ge=0, le=7 * 86400)
    mode: str = "cached"
    branch_from: str | None = Field(default=None, max_length=128)
    """mode ``branched``: the snapshot every worker of the function is restored from."""
    network: Literal["none", "egress"] = "none"
    """``none``: the sandbox has only its own loopback (default). ``egress``: it may open connections
    out (a private veth with NAT), but never to the host itself."""
    isolation: Isolation | None = None
    """``runc`` (namespaces, cgroups, seccomp on the host kernel) or ``gvisor`` (runsc: the function's
    syscalls go to gVisor's user-space kernel). Default: the daemon's ``FAASD_ISOLATION``."""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("command must be a non-empty list of arguments (or null)")
        return v

    def check(self) -> FunctionSpec:
        """Semantic checks that pydantic cannot express; raise :class:`InvalidInputError` (400)."""
        check_name(self.name)
        if self.mode in RESERVED_MODES:
            raise InvalidInputError(
                f"execution mode {self.mode!r} is not a function mode; persistent sandboxes are "
                "instances (POST /api/v1/instances, 'faas instance start'); for functions use "
                "'ephemeral', 'cached', 'checkpointed' or 'branched'",
                mode=self.mode,
            )
        if self.mode not in MODES:
            raise InvalidInputError(
                f"unknown execution mode {self.mode!r}; "
                "use 'ephemeral', 'cached', 'checkpointed' or 'branched'"
            )
        if self.mode == "branched" and not self.branch_from:
            raise InvalidInputError(
                "mode 'branched' needs 'branch_from': the id of the snapshot its workers are restored from"
            )
        if self.branch_from is not None and self.mode != "branched":
            raise InvalidInputError(f"'branch_from' is only valid with mode 'branched', not {self.mode!r}")
        for key in self.annotations:
            if key in INTERNAL_ANNOTATIONS:
                raise InvalidInputError(
                    f"annotation {key!r} is reserved for faasd; set the field "
                    f"{key.removeprefix('faasd.')!r} instead",
                    annotation=key,
                )
        for s in self.secrets:
            if not SECRET_NAME_RE.match(s):
                raise InvalidInputError(f"secret name {s!r} is invalid", secret=s)
        if self.runtime in ("python", "node") and self.command is not None:
            raise InvalidInputError(
                f"runtime {self.runtime!r} runs a handler, not a command: set 'handler' or use runtime 'exec'"
            )
        if (
            self.runtime == "python"
            and self.handler is not None
            and not re.match(r"^[A-Za-z_][\w.]*[.:][A-Za-z_]\w*$", self.handler)
        ):
            raise InvalidInputError(
                f"python handler {self.handler!r} must look like 'module:function' (or 'module.function')"
            )
        return self


def default_handler(runtime: str) -> str | None:
    return {"python": "handler:handle", "node": "handler.js"}.get(runtime)


def display_name(fn: Function) -> str:
    """The function's name within its namespace (its record's ``name`` is the id, see
    :mod:`faasd.platform.namespaces`)."""
    return split_function_id(fn.name)[0]


def to_spec(fn: Function) -> FunctionSpec:
    return FunctionSpec(
        name=display_name(fn),
        namespace=fn.namespace,
        image=fn.image,
        runtime=fn.runtime,  # type: ignore[arg-type]
        handler=fn.handler,
        command=fn.command,
        port=fn.port,
        env=dict(fn.env),
        secrets=list(fn.secrets),
        limits=LimitsModel(
            memory_mb=fn.memory_mb,
            cpu_cores=fn.cpu_cores,
            pids=fn.pids,
            timeout_s=fn.timeout_s,
            disk_mb=fn.disk_mb,
        ),
        scale=ScaleModel.model_construct(min=fn.scale_min, max=fn.scale_max),
        concurrency=fn.concurrency,
        queue_size=fn.queue_size,
        idle_ttl_s=fn.idle_ttl_s,
        mode=fn.mode,
        branch_from=(fn.annotations or {}).get(BRANCH_FROM_ANNOTATION) if fn.mode == "branched" else None,
        network=network_of(fn),  # type: ignore[arg-type]
        isolation=isolation_of(fn),  # type: ignore[arg-type]
        labels=dict(fn.labels),
        annotations={k: v for k, v in (fn.annotations or {}).items() if k not in INTERNAL_ANNOTATIONS},
    )


def network_of(fn: Function) -> str:
    """The network mode of a function record (``none`` unless it was deployed with ``egress``)."""
    mode = (fn.annotations or {}).get(NETWORK_ANNOTATION, "none")
    return mode if mode in NETWORK_MODES else "none"


def isolation_of(fn: Function) -> str:
    """The isolation backend of a function record (``runc`` unless it was deployed with ``gvisor``)."""
    iso = (fn.annotations or {}).get(ISOLATION_ANNOTATION, "runc")
    return iso if iso in ISOLATIONS else "runc"


def _apply(fn: Function, spec: FunctionSpec) -> None:
    fn.image = spec.image
    fn.runtime = spec.runtime
    fn.handler = spec.handler if spec.handler is not None else default_handler(spec.runtime)
    fn.command = spec.command
    fn.port = spec.port if spec.port is not None else (8080 if spec.runtime == "http" else None)
    fn.env = dict(spec.env)
    fn.secrets = list(spec.secrets)
    fn.memory_mb = spec.limits.memory_mb
    fn.cpu_cores = spec.limits.cpu_cores
    fn.pids = spec.limits.pids
    fn.timeout_s = spec.limits.timeout_s
    fn.disk_mb = spec.limits.disk_mb
    fn.scale_min = spec.scale.min
    fn.scale_max = spec.scale.max
    fn.concurrency = spec.concurrency
    fn.queue_size = spec.queue_size
    fn.idle_ttl_s = spec.idle_ttl_s
    fn.mode = spec.mode
    fn.labels = dict(spec.labels)
    fn.annotations = dict(spec.annotations)
    if spec.branch_from is not None:
        fn.annotations[BRANCH_FROM_ANNOTATION] = spec.branch_from
    if spec.network != "none":
        fn.annotations[NETWORK_ANNOTATION] = spec.network
    if spec.isolation is not None and spec.isolation != "runc":
        fn.annotations[ISOLATION_ANNOTATION] = spec.isolation


ImageCheck = Callable[[str], None]
"""Raises :class:`InvalidInputError` when the image ref does not exist."""
SecretCheck = Callable[[list[str], str], None]
"""Raises :class:`InvalidInputError` when a secret name does not exist in the namespace."""


class FunctionService:
    def __init__(
        self, db: Database, *, image_check: ImageCheck | None = None, secret_check: SecretCheck | None = None
    ) -> None:
        self.db = db
        self.image_check = image_check
        self.secret_check = secret_check
        self.snapshot_check: Callable[[str], None] | None = None
        """Raises when a ``branch_from`` snapshot does not exist (set by the snapshot service)."""
        self.default_isolation: Isolation = "runc"
        """Isolation of functions deployed without one (the daemon's ``Settings.isolation``)."""
        self.disk_check: Callable[[int], None] | None = None
        """Raises :class:`faasd.errors.DiskLimitTooLargeError` for a disk limit the host cannot hold."""
        self.generation = 0
        """Bumped by every change this service makes to a function record (create/update/delete/scale):
        readers may cache records for as long as it stays the same."""

    def _validate(self, spec: FunctionSpec, namespace: str) -> None:
        spec.check()
        if spec.isolation is None:
            spec.isolation = self.default_isolation
        if spec.isolation == "gvisor":
            check_gvisor_function(spec.runtime, spec.network, spec.mode)
        if self.disk_check is not None:
            self.disk_check(spec.limits.disk_mb)
        if self.image_check is not None:
            self.image_check(spec.image)
        if self.secret_check is not None and spec.secrets:
            self.secret_check(spec.secrets, namespace)
        if spec.branch_from is not None and self.snapshot_check is not None:
            self.snapshot_check(spec.branch_from)

    def create(self, spec: FunctionSpec, namespace: str = DEFAULT_NAMESPACE) -> Function:
        """A new function ``spec.name`` in ``namespace`` (its id: :func:`function_id`)."""
        self._validate(spec, namespace)
        check_id_length(spec.name, namespace)
        fid = function_id(spec.name, namespace)
        with self.db.session() as s:
            if s.get(Function, fid) is not None:
                raise ConflictError(
                    f"function {spec.name!r} already exists{_in(namespace)}; update it with PUT or delete "
                    "it first",
                    name=spec.name,
                )
            fn = Function(name=fid, namespace=namespace)
            _apply(fn, spec)
            self.generation += 1
            s.add(fn)
            s.flush()
            s.refresh(fn)
            return fn

    def update(self, fid: str, spec: FunctionSpec) -> Function:
        name, namespace = split_function_id(fid)
        if spec.name != name:
            raise InvalidInputError(f"body name {spec.name!r} does not match the URL name {name!r}")
        self._validate(spec, namespace)
        with self.db.session() as s:
            fn = s.get(Function, fid)
            if fn is None:
                raise NotFoundError(
                    f"function {name!r} does not exist{_in(namespace)}; create it first", name=name
                )
            _apply(fn, spec)
            self.generation += 1
            s.flush()
            s.refresh(fn)
            return fn

    def get(self, fid: str) -> Function:
        """The function with id ``fid`` (``name``, or ``name.namespace`` outside the default namespace)."""
        with self.db.session() as s:
            fn = s.get(Function, fid)
            if fn is None:
                name, namespace = split_function_id(fid)
                raise NotFoundError(
                    f"function {name!r} does not exist{_in(namespace)}; deploy it first", name=name
                )
            return fn

    def list(self, namespace: str | None = None) -> list[Function]:
        """Every function, or those of ``namespace``."""
        with self.db.session() as s:
            q = select(Function)
            if namespace is not None:
                q = q.where(Function.namespace == namespace)
            return list(s.scalars(q.order_by(Function.name)))

    def delete(self, fid: str) -> None:
        with self.db.session() as s:
            fn = s.get(Function, fid)
            if fn is None:
                name, namespace = split_function_id(fid)
                raise NotFoundError(f"function {name!r} does not exist{_in(namespace)}", name=name)
            self.generation += 1
            s.delete(fn)

    def set_scale(self, name: str, *, min: int | None = None, max: int | None = None) -> Function:
        with self.db.session() as s:
            fn = s.get(Function, name)
            if fn is None:
                short, namespace = split_function_id(name)
                raise NotFoundError(f"function {short!r} does not exist{_in(namespace)}", name=short)
            new_min = fn.scale_min if min is None else min
            new_max = fn.scale_max if max is None else max
            if new_min < 0 or new_max < 1 or new_min > new_max or new_max > 100:
                raise InvalidInputError(
                    "scale bounds must satisfy 0 <= min <= max <= 100 and max >= 1, "
                    f"got min={new_min} max={new_max}"
                )
            fn.scale_min, fn.scale_max = new_min, new_max
            self.generation += 1
            s.flush()
            s.refresh(fn)
            return fn

    def count_invocation(self, name: str) -> None:
        with self.db.session() as s:
            fn = s.get(Function, name)
            if fn is not None:
                fn.invocation_count = (fn.invocation_count or 0) + 1


def _in(namespace: str) -> str:
    return "" if namespace == DEFAULT_NAMESPACE else f" in namespace {namespace!r}"


def function_dict(fn: Function, status: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = to_spec(fn)
    out = spec.model_dump()
    out["namespace"] = fn.namespace
    out["created_at"] = iso(fn.created_at)
    out["updated_at"] = iso(fn.updated_at)
    out["invocation_count"] = fn.invocation_count
    out["status"] = status or {
        "replicas": 0,
        "busy": 0,
        "queued": 0,
        "min": fn.scale_min,
        "max": fn.scale_max,
    }
    return out
