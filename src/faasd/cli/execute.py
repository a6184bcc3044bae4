"""``faas exec``: one-off runs in a fresh sandbox (``POST /api/v1/execute``)."""

from __future__ import annotations

from typing import Annotated

import typer

from faasd.cli import _output as out
from faasd.cli._context import client
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
    out.print_process_result(result, json_, problem)
    out.exit_with(result.exit_code if result.exit_code is not None else 1)
