"""``faas exec``/``fork``/``prewarm``/``pools``: one-off runs (``POST /api/v1/execute`` and friends)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from faasd.cli import _output as out
from faasd.cli._context import client

if TYPE_CHECKING:
    from faasd.sdk import ExecuteOptions


def exec_(
    ctx: typer.Context,
    command: Annotated[
        list[str] | None, typer.Argument(help="Command and arguments (after --).", show_default=False)
    ] = None,
    image: Annotated[
        str | None,
        typer.Option("--image", "-i", help="Image to run in (default: the language's base image)."),
    ] = None,
    language: Annotated[str | None, typer.Option("--language", "-l", help="python | node | shell")] = None,
    code: Annotated[str | None, typer.Option("--code", "-c", help="Source to run: text or @file.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE, repeatable.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Time-out in seconds.")] = None,
    memory: Annotated[int | None, typer.Option("--memory", "-m", help="Memory limit in MB.")] = None,
    cpu: Annotated[float | None, typer.Option(help="CPU cores.")] = None,
    workdir: Annotated[str | None, typer.Option("--workdir", "-w", help="Working directory.")] = None,
    isolation: Annotated[
        str | None, typer.Option(help="runc | gvisor (runsc); default: the daemon's FAASD_ISOLATION.")
    ] = None,
    disk: Annotated[int | None, typer.Option(help="Disk limit of the writable layer in MB.")] = None,
    stdin: Annotated[str | None, typer.Option(help="Text passed on stdin: text, @file or -.")] = None,
    mode: Annotated[
        str | None,
        typer.Option(help="ephemeral | cached | checkpointed | branched | persistent (default: ephemeral)."),
    ] = None,
    runtime: Annotated[str | None, typer.Option(help="docker/auto (runc) | gvisor (runsc).")] = None,
    cache_key: Annotated[str | None, typer.Option(help="Result cache key (mode cached).")] = None,
    snapshot: Annotated[
        str | None, typer.Option("--snapshot", help="Restore this snapshot first (mode checkpointed).")
    ] = None,
    branch_from: Annotated[
        str | None, typer.Option(help="Snapshot id or request id to run a copy of (mode branched).")
    ] = None,
    workspace: Annotated[
        str | None, typer.Option(help="Request id of the persistent workspace to use again.")
    ] = None,
    ttl: Annotated[float | None, typer.Option(help="Persistent workspace idle TTL in seconds.")] = None,
    json_: Annotated[bool, out.JsonOption] = False,
) -> None:
    """Run a command or a code snippet once; exits with its exit code.

    Examples: faas exec --image faasd/python:latest -- python3 -c 'print(1)';
    faas exec --language python --code 'print(1)'
    """
    if bool(command) == (code is not None):
        raise typer.BadParameter("give either a command after -- or --code", param_hint="COMMAND/--code")
    if code is not None and not language:
        raise typer.BadParameter("--code needs --language python|node|shell", param_hint="--language")
    source = out.read_data(code)
    stdin_data = out.read_data(stdin)
    options: ExecuteOptions = {}
    if image is not None:
        options["image"] = image
    if env:
        options["env_vars"] = out.parse_pairs(env, "--env")
    if timeout is not None:
        options["timeout_ms"] = int(timeout * 1000)
    if memory is not None:
        options["memory_mb"] = memory
    if cpu is not None:
        options["cpu_cores"] = cpu
    if workdir is not None:
        options["working_dir"] = workdir
    if isolation is not None:
        options["isolation"] = isolation
    if disk is not None:
        options["disk_mb"] = disk
    if stdin_data is not None:
        options["stdin"] = stdin_data.decode(errors="replace")
    for key, value in (
        ("mode", mode),
        ("runtime", runtime),
        ("cache_key", cache_key),
        ("snapshot_id", snapshot),
        ("branch_from", branch_from),
        ("workspace", workspace),
        ("ttl_s", ttl),
    ):
        if value is not None:
            options[key] = value  # type: ignore[literal-required]
    with client(ctx) as c:
        result = c.execute(command or None, code=source.decode() if source is not None else None,
                           language=language, **options)
    problem = None
    if result.timed_out:
        problem = f"timed out after {result.duration_ms or 0:.0f} ms (request {result.request_id})"
    elif result.oom_killed:
        problem = f"killed: out of memory (request {result.request_id})"
    elif result.stdout_truncated or result.stderr_truncated:
        flags = (("stdout", result.stdout_truncated), ("stderr", result.stderr_truncated))
        cut = " and ".join(name for name, was_cut in flags if was_cut)
        out.info(f"{cut} was cut at the daemon's output limit")
    if not json_ and result.snapshot:
        out.info(f"snapshot {result.snapshot.get('id')} (request {result.request_id})")
    if not json_ and result.workspace:
        out.info(f"workspace {result.workspace.get('id')} (use --workspace to run in it again)")
    if not json_ and result.cache_hit:
        out.info("cache hit")
    out.print_process_result(result, json_, problem)
    out.exit_with(result.exit_code if result.exit_code is not None else 1)


def fork(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="Snapshot id, or request id of a checkpointed run.")],
    commands: Annotated[
        list[str], typer.Option("--command", "-C", help="Shell command; repeat for several copies.")
    ],
    timeout: Annotated[float | None, typer.Option(help="Time-out in seconds, per command.")] = None,
    json_: Annotated[bool, out.JsonOption] = False,
) -> None:
    """Run each command in its own copy of SOURCE's state (files and processes); the source is untouched."""
    options: ExecuteOptions = {}
    if timeout is not None:
        options["timeout_ms"] = int(timeout * 1000)
    with client(ctx) as c:
        results = c.fork(source, list(commands), **options)
    if json_:
        out.print_json(results)
        return
    for cmd, r in zip(commands, results, strict=True):
        out.info(f"$ {cmd}  -> exit {r.exit_code} ({r.request_id})")
        out.write_bytes(r.stdout.encode())
    out.exit_with(max((r.exit_code or 0) for r in results))


def prewarm(
    ctx: typer.Context,
    image: Annotated[str, typer.Argument(help="Image to keep warm execute sandboxes of.")],
    count: Annotated[int, typer.Option("--count", "-n", help="How many (0 empties the pool).")] = 1,
    runtime: Annotated[str | None, typer.Option(help="docker/auto (runc) | gvisor (runsc).")] = None,
    json_: Annotated[bool, out.JsonOption] = False,
) -> None:
    """Start warm sandboxes for one-off runs of IMAGE (waits until they run)."""
    with client(ctx) as c:
        pool = c.prewarm(image, count, runtime=runtime)
    out.print_done(pool, json_, f"{pool.get('warm', 0)} warm sandbox(es) of {image}")


def pools(ctx: typer.Context, json_: Annotated[bool, out.JsonOption] = False) -> None:
    """Warm execute sandboxes per image, and warm workers per function."""
    with client(ctx) as c:
        data = c.pools()
    if json_:
        out.print_json(data)
        return
    out.print_table(
        ["IMAGE", "RUNTIME", "WARM", "TARGET", "TAKEN"],
        [[p["image"], p["runtime"], p["warm"], p["target"], p["taken"]] for p in data.get("execute", [])],
    )
