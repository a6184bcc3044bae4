"""Sub-apps for secrets, API keys and executions."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from faasd.cli import _output as out
from faasd.cli._context import client

Json = Annotated[bool, out.JsonOption]

secrets_app = typer.Typer(help="Secrets mounted into functions at /run/secrets/<name>.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (admin scope).", no_args_is_help=True)
executions_app = typer.Typer(help="Invocation records: status, result, logs.", no_args_is_help=True)


def _secret_value(value: str | None, from_file: str | None) -> str:
    if value is not None and from_file is not None:
        raise typer.BadParameter("give --value or --from-file, not both", param_hint="--value")
    if from_file is not None:
        data = out.read_data(from_file if from_file == "-" else "@" + from_file)
        return (data or b"").decode()
    if value is not None:
        return value
    if sys.stdin.isatty():
        return typer.prompt("secret value", hide_input=True)
    return sys.stdin.read()


@secrets_app.command("create")
def secrets_create(
    ctx: typer.Context,
    name: str,
    value: Annotated[
        str | None, typer.Option(help="The value (visible in shell history: prefer stdin).")
    ] = None,
    from_file: Annotated[
        str | None, typer.Option("--from-file", help="Read the value from a file (- for stdin).")
    ] = None,
    update: Annotated[bool, typer.Option("--update", help="Replace the value if it exists.")] = False,
    json_: Json = False,
) -> None:
    """Create a secret (value from --value, --from-file, or stdin)."""
    secret_value = _secret_value(value, from_file)
    with client(ctx) as c:
        secret = c.update_secret(name, secret_value) if update else c.create_secret(name, secret_value)
    out.print_done(secret, json_, f"{'updated' if update else 'created'} secret {secret.name}")


@secrets_app.command("ls")
def secrets_ls(ctx: typer.Context, json_: Json = False) -> None:
    """List secrets (names only; values are never returned)."""
    with client(ctx) as c:
        secrets = c.list_secrets()
    rows = [(s.name, s.namespace, s.created_at, s.updated_at) for s in secrets]
    columns = ["NAME", "NAMESPACE", "CREATED", "UPDATED"]
    out.print_listing(secrets, json_, columns, rows, empty="no secrets")


@secrets_app.command("rm")
def secrets_rm(ctx: typer.Context, names: list[str]) -> None:
    """Delete secrets (refused while a function uses one)."""
    with client(ctx) as c:
        out.for_each(names, c.delete_secret, "deleted secret {}")


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    name: str,
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="invoke | deploy | admin, repeatable.")
    ] = None,
    rate_limit: Annotated[float | None, typer.Option("--rate-limit", help="Requests per second.")] = None,
    burst: Annotated[int | None, typer.Option()] = None,
    namespace: Annotated[
        str | None,
        typer.Option("--namespace", help="Bind the key to this namespace (default: every namespace)."),
    ] = None,
    json_: Json = False,
) -> None:
    """Create an API key; the key itself is printed once."""
    with client(ctx) as c:
        key = c.create_api_key(
            name, scope or ["invoke"], rate_limit_rps=rate_limit, burst=burst, namespace=namespace
        )
    if json_:
        out.print_json(key)
        return
    out.success(f"created key {key.id} ({','.join(key.scopes)}); store it now, it is not shown again:")
    sys.stdout.write(key.key + "\n")


@keys_app.command("ls")
def keys_ls(ctx: typer.Context, json_: Json = False) -> None:
    """List API keys (without their secrets)."""
    with client(ctx) as c:
        keys = c.list_api_keys()
    rows = [
        (k.id, k.name, k.scopes, k.namespace or "*", k.rate_limit_rps, k.burst, k.created_at, k.last_used_at)
        for k in keys
    ]
    columns = ["ID", "NAME", "SCOPES", "NAMESPACE", "RATE", "BURST", "CREATED", "LAST USED"]
    out.print_listing(keys, json_, columns, rows, empty="no API keys")


@keys_app.command("rm")
def keys_rm(ctx: typer.Context, ids: list[str]) -> None:
    """Revoke API keys by id."""
    with client(ctx) as c:
        out.for_each(ids, c.delete_api_key, "revoked key {}")


@executions_app.command("ls")
def executions_ls(
    ctx: typer.Context,
    function: Annotated[str | None, typer.Option("--function", "-f")] = None,
    status: Annotated[
        str | None, typer.Option(help="queued | running | succeeded | failed | timeout")
    ] = None,
    limit: Annotated[int, typer.Option()] = 20,
    json_: Json = False,
) -> None:
    """List recent executions, newest first."""
    with client(ctx) as c:
        executions = c.list_executions(function=function, status=status, limit=limit)
    rows = [
        (e.id, e.function, e.namespace, e.kind, e.status, e.http_status, e.cold_start, e.run_ms, e.created_at)
        for e in executions
    ]
    columns = ["ID", "FUNCTION", "NAMESPACE", "KIND", "STATUS", "HTTP", "COLD", "RUN MS", "CREATED"]
    out.print_listing(executions, json_, columns, rows, empty="no executions")


@executions_app.command("get")
def executions_get(ctx: typer.Context, execution_id: str, json_: Json = False) -> None:
    """Show one execution; its result body goes to stdout."""
    with client(ctx) as c:
        execution = c.get_execution(execution_id)
    if json_:
        out.print_json(execution)
        return
    out.info(
        f"{execution.id} {execution.function} {execution.status} http={execution.http_status}"
        + (f" error={execution.error}" if execution.error else "")
    )
    out.write_bytes(execution.body, newline=True)


@executions_app.command("logs")
def executions_logs(ctx: typer.Context, execution_id: str, json_: Json = False) -> None:
    """Print an execution's stdout and stderr."""
    with client(ctx) as c:
        logs = c.execution_logs(execution_id)
    if json_:
        out.print_json(logs)
        return
    sys.stdout.write(logs.stdout)
    sys.stderr.write(logs.stderr)
