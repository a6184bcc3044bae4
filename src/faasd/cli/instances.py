"""``faas instance ...`` (persistent instances) and ``faas job ...`` (typed jobs)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Annotated, Any

import typer

from faasd.cli import _output as out
from faasd.cli._context import client

instance_app = typer.Typer(no_args_is_help=True, help="Persistent instances: exec, files, ports, pause.")
job_app = typer.Typer(no_args_is_help=True, help="Typed jobs (POST /api/v1/jobs).")

_COLUMNS = ("ID", "NAME", "STATUS", "IMAGE / SNAPSHOT", "ISOLATION", "CPU", "MEM MB", "DISK GB", "PORTS")


def _row(i: Any) -> list[Any]:
    ports = [f"{p.internal_port}->{p.host_port}" for p in i.ports]
    return [
        i.id, i.name, i.status, i.image or i.source_snapshot, i.isolation or "runc", i.cpu_cores, i.memory_mb,
        i.disk_gb, ports,
    ]


def _show(inst: Any, json_: bool) -> None:
    out.print_listing(inst, json_, _COLUMNS, [_row(inst)])


@instance_app.command("start")
def start(
    ctx: typer.Context,
    instance_id: Annotated[
        str | None, typer.Argument(help="Restart this stopped instance (omit to create a new one).")
    ] = None,
    image: Annotated[str | None, typer.Option("--image", "-i", help="Image (default faasd/python)")] = None,
    snapshot: Annotated[str | None, typer.Option("--snapshot", help="Start from this snapshot id.")] = None,
    name: Annotated[str | None, typer.Option(help="A name to remember it by.")] = None,
    cpu: Annotated[float, typer.Option(help="CPU cores.")] = 1.0,
    memory: Annotated[int, typer.Option("--memory", "-m", help="Memory limit in MB.")] = 512,
    disk: Annotated[float, typer.Option(help="Disk size in GB.")] = 1.0,
    ttl: Annotated[float | None, typer.Option(help="Auto-pause after this many idle seconds.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE, repeatable.")] = None,
    isolation: Annotated[
        str | None, typer.Option(help="runc | gvisor (no ports, no CRIU snapshots); default: the daemon's.")
    ] = None,
    pids: Annotated[int | None, typer.Option(help="Max processes+threads (default 4096).")] = None,
    json_: Annotated[bool, out.JsonOption] = False,
) -> None:
    """Start a new instance, or start a stopped one again (its files are kept)."""
    with client(ctx) as c:
        if instance_id is not None:
            inst = c.instance_action(instance_id, "start")
        else:
            inst = c.start_instance(
                image,
                snapshot_id=snapshot,
                name=name,
                cpu_cores=cpu,
                memory_mb=memory,
                disk_gb=disk,
                ttl_s=ttl,
                env=out.parse_pairs(env, "--env"),
                isolation=isolation,
                pids=pids,
            )
    _show(inst, json_)


@instance_app.command("ls")
def ls(ctx: typer.Context, json_: Annotated[bool, out.JsonOption] = False) -> None:
    """List instances."""
    with client(ctx) as c:
        items = c.list_instances()
    out.print_listing(items, json_, _COLUMNS, [_row(i) for i in items], empty="no instances")


@instance_app.command("get")
def get(ctx: typer.Context, instance_id: str, json_: Annotated[bool, out.JsonOption] = False) -> None:
    """Show one instance."""
    with client(ctx) as c:
        _show(c.get_instance(instance_id), json_)


def _action(action: str, help_: str) -> None:
    def command(ctx: typer.Context, instance_id: str, json_: Annotated[bool, out.JsonOption] = False) -> None:
        with client(ctx) as c:
            _show(c.instance_action(instance_id, action), json_)

    command.__doc__ = help_
    instance_app.command(action)(command)


_action("stop", "Stop an instance (the sandbox goes, its files are kept for the next start).")
_action("pause", "Freeze every process of an instance.")
_action("resume", "Thaw a paused instance.")


@instance_app.command("rm")
def rm(ctx: typer.Context, instance_ids: list[str]) -> None:
    """Delete instances (the sandbox and the files)."""
    with client(ctx) as c:
        out.for_each(instance_ids, c.delete_instance, "deleted {}")


@instance_app.command("exec")
def exec_(
    ctx: typer.Context,
    instance_id: str,
    command: Annotated[list[str], typer.Argument(help="Command and arguments (after --).")],
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE, repeatable.")] = None,
    workdir: Annotated[str | None, typer.Option("--workdir", "-w", help="Working directory.")] = None,
    stdin: Annotated[str | None, typer.Option(help="stdin: text, @file or -.")] = None,
    timeout: Annotated[float, typer.Option(help="Time-out in seconds.")] = 60.0,
    json_: Annotated[bool, out.JsonOption] = False,
) -> None:
    """Run a command inside an instance; exits with its exit code."""
    with client(ctx) as c:
        res = c.exec_instance(
            instance_id,
            command,
            stdin=out.read_data(stdin),
            env=out.parse_pairs(env, "--env"),
            cwd=workdir,
            timeout_s=timeout,
        )
    out.print_process_result(res, json_, f"timed out after {timeout:g} s" if res.timed_out else None)
    out.exit_with(res.exit_code)


def _split(ref: str) -> tuple[str, str] | None:
    inst, sep, path = ref.partition(":")
    if sep and inst.startswith("in-") and path.startswith("/"):
        return inst, path
    return None


def pack(local: Path) -> bytes:
    """A tar of a local file or directory, named by its last component."""
    if not local.exists():
        raise typer.BadParameter(f"{local} does not exist", param_hint="SRC")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(local), arcname=local.name)
    return buf.getvalue()


@instance_app.command("cp")
def cp(ctx: typer.Context, src: str, dest: str) -> None:
    """Copy files: `faas instance cp ./dir in-XXX:/app` uploads (into /app), `faas instance cp
    in-XXX:/app/out ./here` downloads (into ./here)."""
    up, down = _split(dest), _split(src)
    with client(ctx) as c:
        if up is not None and down is None:
            res = c.upload_tar_to_instance(up[0], up[1], pack(Path(src)))
            out.success(f"uploaded {res.files} entr{'y' if res.files == 1 else 'ies'} to {up[0]}:{up[1]}")
        elif down is not None and up is None:
            data = c.download_from_instance(down[0], down[1])
            target = Path(dest)
            target.mkdir(parents=True, exist_ok=True)
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                tar.extractall(target, filter="data")
            out.success(f"downloaded {down[0]}:{down[1]} into {target}")
        else:
            raise typer.BadParameter("exactly one of SRC and DEST must be INSTANCE:/absolute/path")


@instance_app.command("expose")
def expose(
    ctx: typer.Context,
    instance_id: str,
    port: int,
    protocol: Annotated[str, typer.Option(help="http | tcp")] = "http",
    subdomain: Annotated[str | None, typer.Option(help="Subdomain to record.")] = None,
    json_: Annotated[bool, out.JsonOption] = False,
) -> None:
    """Expose a port of an instance on host 127.0.0.1 (prints the URL)."""
    with client(ctx) as c:
        p = c.expose_port(instance_id, port, protocol=protocol, subdomain=subdomain)
    if json_:
        out.print_json(p)
    else:
        typer.echo(p.url)


@job_app.command("run")
def run(
    ctx: typer.Context,
    type_: Annotated[str, typer.Argument(metavar="TYPE", help="0-11 or a name, e.g. start_instance")],
    args: Annotated[str, typer.Option("--args", "-a", help="Arguments as JSON (text, @file or -).")] = "{}",
) -> None:
    """Run a job and print it (with its result) as JSON."""
    raw = out.read_data(args) or b"{}"
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="--args") from None
    with client(ctx) as c:
        job = c.run_job(int(type_) if type_.isdigit() else type_, parsed)
    out.print_json(job)


@job_app.command("get")
def get_job(ctx: typer.Context, job_id: str) -> None:
    """Show a job (arguments, status, result or error)."""
    with client(ctx) as c:
        out.print_json(c.get_job(job_id))
