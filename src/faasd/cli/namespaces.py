"""``faas namespace``: tenants and their quotas (changes need an admin key)."""

from __future__ import annotations

from typing import Annotated

import typer

from faasd.cli import _output as out
from faasd.cli._context import client

Json = Annotated[bool, out.JsonOption]

namespace_app = typer.Typer(
    help="Namespaces (tenants): they own functions, secrets, snapshots, instances, executions and jobs.",
    no_args_is_help=True,
)


def _quotas(
    max_sandboxes: int | None, max_memory_mb: int | None, max_disk_mb: int | None, max_snapshots: int | None
) -> dict[str, int | None]:
    given = {
        "max_sandboxes": max_sandboxes,
        "max_memory_mb": max_memory_mb,
        "max_disk_mb": max_disk_mb,
        "max_snapshots": max_snapshots,
    }
    return {k: v for k, v in given.items() if v is not None}


@namespace_app.command("create")
def ns_create(
    ctx: typer.Context,
    name: str,
    max_sandboxes: Annotated[
        int | None, typer.Option("--max-sandboxes", min=0, help="Running sandboxes.")
    ] = None,
    max_memory_mb: Annotated[
        int | None, typer.Option("--max-memory-mb", min=0, help="Sum of their memory limits.")
    ] = None,
    max_disk_mb: Annotated[
        int | None, typer.Option("--max-disk-mb", min=0, help="Instance disks + snapshot bytes.")
    ] = None,
    max_snapshots: Annotated[
        int | None, typer.Option("--max-snapshots", min=0, help="Stored snapshots.")
    ] = None,
    json_: Json = False,
) -> None:
    """Create a namespace (quotas left out are unlimited)."""
    with client(ctx) as c:
        ns = c.create_namespace(
            name,
            max_sandboxes=max_sandboxes,
            max_memory_mb=max_memory_mb,
            max_disk_mb=max_disk_mb,
            max_snapshots=max_snapshots,
        )
    out.print_done(ns, json_, f"created namespace {ns.name}", result=ns.name)


@namespace_app.command("set")
def ns_set(
    ctx: typer.Context,
    name: str,
    max_sandboxes: Annotated[int | None, typer.Option("--max-sandboxes", min=0)] = None,
    max_memory_mb: Annotated[int | None, typer.Option("--max-memory-mb", min=0)] = None,
    max_disk_mb: Annotated[int | None, typer.Option("--max-disk-mb", min=0)] = None,
    max_snapshots: Annotated[int | None, typer.Option("--max-snapshots", min=0)] = None,
    unlimited: Annotated[
        list[str] | None, typer.Option("--unlimited", help="Quota to lift (e.g. max_sandboxes), repeatable.")
    ] = None,
    json_: Json = False,
) -> None:
    """Change quotas of a namespace (the others stay)."""
    quotas: dict[str, int | None] = _quotas(max_sandboxes, max_memory_mb, max_disk_mb, max_snapshots)
    quotas.update({q: None for q in unlimited or []})
    if not quotas:
        raise typer.BadParameter("give at least one quota to change", param_hint="--max-sandboxes")
    with client(ctx) as c:
        ns = c.set_namespace_quotas(name, **quotas)
    out.print_done(ns, json_, f"updated namespace {ns.name}")


def _limit(v: int | None) -> str:
    return "-" if v is None else str(v)


@namespace_app.command("ls")
def ns_ls(ctx: typer.Context, json_: Json = False) -> None:
    """List namespaces with their use and quotas (use/limit)."""
    with client(ctx) as c:
        namespaces = c.list_namespaces()
    rows = [
        (
            n.name,
            f"{n.usage.sandboxes}/{_limit(n.quotas.max_sandboxes)}",
            f"{n.usage.memory_mb}/{_limit(n.quotas.max_memory_mb)}",
            f"{n.usage.disk_mb}/{_limit(n.quotas.max_disk_mb)}",
            f"{n.usage.snapshots}/{_limit(n.quotas.max_snapshots)}",
        )
        for n in namespaces
    ]
    columns = ["NAME", "SANDBOXES", "MEMORY MB", "DISK MB", "SNAPSHOTS"]
    out.print_listing(namespaces, json_, columns, rows, empty="no namespaces")


@namespace_app.command("get")
def ns_get(ctx: typer.Context, name: str) -> None:
    """Show one namespace (JSON: quotas and current use)."""
    with client(ctx) as c:
        out.print_json(c.get_namespace(name))


@namespace_app.command("rm")
def ns_rm(ctx: typer.Context, names: list[str]) -> None:
    """Delete empty namespaces (refused while one holds functions, secrets, instances, snapshots or keys)."""
    with client(ctx) as c:
        out.for_each(names, c.delete_namespace, "deleted namespace {}")
