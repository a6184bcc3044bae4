"""Function commands: deploy, ls, describe, rm, scale, invoke, logs."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from faasd.cli import _output as out
from faasd.cli._context import client

if TYPE_CHECKING:
    from faasd.sdk import Client, DeployOptions, Function, InvokeResult, StreamResult

Json = Annotated[bool, out.JsonOption]


def deploy(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Function name (lowercase letters, digits, dashes).")],
    source: Annotated[
        Path | None,
        typer.Argument(
            help="Directory with the function's code, added as a layer at /function.",
            show_default=False,
            exists=True,
            file_okay=False,
            dir_okay=True,
            resolve_path=True,
        ),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            "--image",
            "-i",
            help="Image ref or id in the image store (base image when deploying a directory).",
        ),
    ] = None,
    runtime: Annotated[
        str | None, typer.Option("--runtime", "-r", help="python | node | exec | http")
    ] = None,
    handler: Annotated[str | None, typer.Option(help="python: module.func; node: file.export")] = None,
    command: Annotated[
        str | None, typer.Option(help="exec/http: the command line to run (shell-quoted).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="http: port the server listens on.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE, repeatable.")] = None,
    secret: Annotated[
        list[str] | None, typer.Option("--secret", "-s", help="Secret name, repeatable.")
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE, repeatable.")] = None,
    memory: Annotated[int | None, typer.Option("--memory", "-m", help="Memory limit in MB.")] = None,
    cpu: Annotated[float | None, typer.Option(help="CPU cores.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Invocation time-out in seconds.")] = None,
    min_replicas: Annotated[int | None, typer.Option("--min", help="Warm workers kept ready.")] = None,
    max_replicas: Annotated[int | None, typer.Option("--max", help="Most workers at once.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Concurrent requests per worker.")] = None,
    mode: Annotated[
        str | None, typer.Option(help="cached | ephemeral | checkpointed | branched")
    ] = None,
    branch_from: Annotated[
        str | None, typer.Option("--branch-from", help="mode branched: the snapshot workers start from.")
    ] = None,
    network: Annotated[
        str | None,
        typer.Option(help="none (only the sandbox's own loopback) | egress (outgoing connections)."),
    ] = None,
    isolation: Annotated[
        str | None,
        typer.Option(help="runc | gvisor (runsc; runtimes python, exec); default: FAASD_ISOLATION."),
    ] = None,
    create_only: Annotated[
        bool, typer.Option("--create-only", help="Fail if the function exists instead of updating it.")
    ] = False,
    json_: Json = False,
) -> None:
    """Deploy a function from an image, or from a source directory on top of a base image."""
    options: DeployOptions = {}
    values: dict[str, Any] = {
        "runtime": runtime,
        "handler": handler,
        "port": port,
        "memory_mb": memory,
        "cpu_cores": cpu,
        "timeout_s": timeout,
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "concurrency": concurrency,
        "mode": mode,
        "branch_from": branch_from,
        "network": network,
        "isolation": isolation,
        "command": shlex.split(command) if command else None,
        "env": out.parse_pairs(env, "--env") or None,
        "labels": out.parse_pairs(label, "--label") or None,
        "secrets": list(secret) if secret else None,
    }
    options.update({k: v for k, v in values.items() if v is not None})  # type: ignore[typeddict-item]
    if source is None and image is None:
        raise typer.BadParameter("give --image REF or a source directory", param_hint="IMAGE/SOURCE")
    with client(ctx) as c:
        if source is None:
            fn = c.deploy(name, image, replace=not create_only, **options)
        elif _server_builds_source(c):
            fn = c.deploy(name, image, source=source, replace=not create_only, **options)
        else:
            from faasd.cli._source import build_source_image
            from faasd.config import Settings
            from faasd.sdk._api import default_image

            settings = Settings()
            base = image or default_image(runtime)
            out.info(
                f"building {name} from {source} on {base} in the local image store ({settings.data_dir})"
            )
            ref = build_source_image(settings, name, source, base)
            fn = c.deploy(name, ref, replace=not create_only, **options)
    if json_:
        out.print_json(fn)
    else:
        out.success(f"deployed {fn.name} ({fn.image})")


def _server_builds_source(c: Client) -> bool:
    from faasd.cli._source import server_builds_source

    return server_builds_source(c)


LS_COLUMNS = ["NAME", "NAMESPACE", "IMAGE", "RUNTIME", "MODE", "REPLICAS", "BUSY", "QUEUED", "SCALE"]
LS_COLUMNS += ["ADDRESS", "CREATED"]


def ls(ctx: typer.Context, json_: Json = False) -> None:
    """List deployed functions."""
    with client(ctx) as c:
        functions = c.list_functions()
    if json_:
        out.print_json(functions)
        return
    out.print_table(
        LS_COLUMNS,
        [_row(f) for f in sorted(functions, key=lambda f: (f.name, f.namespace or ""))],
        empty="no functions deployed; try `faas deploy NAME --image REF`",
    )


def _row(f: Function) -> list[Any]:
    st = f.status
    scale = f.scale
    bounds = f"{scale.min}-{scale.max}" if scale is not None else None
    return [
        f.name,
        f.namespace,
        f.image,
        f.runtime,
        f.mode,
        st.replicas if st else None,
        st.busy if st else None,
        st.queued if st else None,
        bounds,
        f.address,
        f.created_at,
    ]


def describe(ctx: typer.Context, name: str, json_: Json = False) -> None:
    """Show one function's full spec and pool status."""
    with client(ctx) as c:
        fn = c.get_function(name)
    if json_:
        out.print_json(fn)
        return
    data = fn.to_json()
    out.print_table(["FIELD", "VALUE"], [(k, v) for k, v in data.items()])


def rm(ctx: typer.Context, names: Annotated[list[str], typer.Argument(help="Functions to delete.")]) -> None:
    """Delete functions (their workers are stopped)."""
    with client(ctx) as c:
        for name in names:
            c.delete_function(name)
            out.success(f"deleted {name}")


def scale(
    ctx: typer.Context,
    name: str,
    replicas: Annotated[int | None, typer.Argument(help="Warm workers wanted now.")] = None,
    min_replicas: Annotated[int | None, typer.Option("--min")] = None,
    max_replicas: Annotated[int | None, typer.Option("--max")] = None,
    json_: Json = False,
) -> None:
    """Scale a function's warm pool: a replica count and/or new min/max bounds."""
    if replicas is None and min_replicas is None and max_replicas is None:
        raise typer.BadParameter("give REPLICAS, --min or --max", param_hint="REPLICAS")
    with client(ctx) as c:
        result = c.scale(name, replicas, min=min_replicas, max=max_replicas)
    if json_:
        out.print_json(result)
    else:
        out.success(f"scaled {result.name}: replicas={result.replicas} min={result.min} max={result.max}")


def invoke(
    ctx: typer.Context,
    name: str,
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="Request body: text, @file, or - for stdin.")
    ] = None,
    content_type: Annotated[str | None, typer.Option("--content-type", "-t")] = None,
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="KEY=VALUE, repeatable.")] = None,
    async_: Annotated[bool, typer.Option("--async", help="Queue it; print the execution id.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="With --async: wait for the result.")] = False,
    stream: Annotated[bool, typer.Option("--stream", help="Stream stdout/stderr while it runs.")] = False,
    timeout: Annotated[float | None, typer.Option(help="Client-side wait limit in seconds.")] = None,
    json_: Json = False,
) -> None:
    """Invoke a function; its response body goes to stdout. Exit code 1 when the function failed."""
    if async_ and stream:
        raise typer.BadParameter("--async and --stream exclude each other", param_hint="--async")
    body = out.read_data(data)
    headers = out.parse_pairs(header, "--header")
    with client(ctx) as c:
        if stream:
            _invoke_stream(c, name, body, content_type, headers, json_)
        elif async_:
            handle = c.invoke_async(name, body, content_type=content_type, headers=headers)
            if not wait:
                if json_:
                    out.print_json({"execution_id": handle.id, "status_url": handle.status_url})
                else:
                    sys.stdout.write(handle.id + "\n")
                return
            execution = handle.wait(timeout=timeout)
            if json_:
                out.print_json(execution)
            else:
                out.write_bytes(execution.body, newline=True)
            if not execution.succeeded:
                out.fail(f"execution {execution.id} {execution.status}: {execution.error or ''}".rstrip(": "))
        else:
            _print_result(
                c.invoke(name, body, content_type=content_type, headers=headers, timeout=timeout), json_
            )


def _print_result(result: InvokeResult, json_: bool) -> None:
    if json_:
        out.print_json(
            {
                "execution_id": result.execution_id,
                "status_code": result.status_code,
                "cold_start": result.cold_start,
                "duration_ms": result.duration_ms,
                "content_type": result.headers.get("content-type"),
                "body": result.text,
            }
        )
        if not result.ok:
            raise typer.Exit(1)
        return
    if result.ok:
        out.write_bytes(result.content, newline=True)
        return
    err = result.error or {}
    message = str(err.get("message") or result.text or f"HTTP {result.status_code}")
    details = err.get("details") if isinstance(err.get("details"), dict) else {}
    trace = details.get("traceback") or details.get("stderr") if details else None
    if trace:
        sys.stderr.write(str(trace).rstrip("\n") + "\n")
    out.fail(f"function failed (HTTP {result.status_code}, execution {result.execution_id}): {message}")


def _invoke_stream(
    c: Client, name: str, body: bytes | None, content_type: str | None, headers: dict[str, str], json_: bool
) -> None:
    from faasd.sdk.models import StreamOutput, StreamResult, StreamStart

    final: StreamResult | None = None
    for event in c.invoke_stream(name, body, content_type=content_type, headers=headers):
        if json_:
            record: dict[str, Any] = {
                "event": event.kind,
                **{k: v for k, v in vars(event).items() if k != "kind"},
            }
            out.print_json(record, compact=True)
        elif isinstance(event, StreamOutput):
            target = sys.stdout if event.stream == "stdout" else sys.stderr
            target.write(event.text if event.text.endswith("\n") else event.text + "\n")
            target.flush()
        elif isinstance(event, StreamStart):
            out.info(f"execution {event.execution_id}" + (" (cold start)" if event.cold_start else ""))
        if isinstance(event, StreamResult):
            final = event
    if final is None:
        return
    if not json_:
        out.write_bytes(final.body, newline=True)
    if not final.ok:
        out.fail(f"execution {final.execution_id} {final.status} (HTTP {final.http_status})")


def logs(
    ctx: typer.Context,
    name: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming new lines.")] = False,
    tail: Annotated[int | None, typer.Option("--tail", "-n", help="Start with the last N lines.")] = None,
    since: Annotated[str | None, typer.Option(help="Only lines after this RFC 3339 time.")] = None,
    json_: Json = False,
) -> None:
    """Print a function's logs (stdout/stderr of its workers)."""
    with client(ctx) as c:
        lines = (
            c.logs(name, follow=True, tail=tail, since=since)
            if follow
            else c.function_logs(name, tail=tail, since=since)
        )
        try:
            for line in lines:
                if json_:
                    out.print_json(line, compact=True)
                    continue
                stamp = line.timestamp.strftime("%H:%M:%S.%f")[:-3] if line.timestamp else "-"
                where = line.stream or line.instance or ""
                sys.stdout.write(f"{stamp} {where:<6} {line.text.rstrip(chr(10))}\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
