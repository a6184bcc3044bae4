"""``faas snapshot ...``, ``faas branch``, ``faas merge``, ``faas sandbox ...`` (restored sandboxes)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from faasd.cli import _output as out
from faasd.cli._context import client

Json = Annotated[bool, out.JsonOption]

snapshot_app = typer.Typer(
    help="Snapshots of running sandboxes (CRIU process image + files): create, restore, branch.",
    no_args_is_help=True,
)
sandbox_app = typer.Typer(
    help="Sandboxes restored from snapshots: list, invoke, remove.", no_args_is_help=True
)


def _size(n: int | None) -> str:
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _sandbox_rows(sandboxes: list[Any]) -> list[tuple[Any, ...]]:
    return [(s.id, s.snapshot_id, s.function, s.alive, s.restore_ms, s.invocations) for s in sandboxes]


_SANDBOX_COLUMNS = ["SANDBOX", "SNAPSHOT", "FUNCTION", "ALIVE", "RESTORE MS", "INVOCATIONS"]


@snapshot_app.command("create")
def snapshot_create(
    ctx: typer.Context,
    sandbox_id: Annotated[
        str | None,
        typer.Argument(help="Sandbox id (a worker, a restored sandbox or an instance's) or instance id."),
    ] = None,
    function: Annotated[
        str | None, typer.Option("--function", "-f", help="Snapshot an idle worker of this function.")
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE (repeatable).")] = None,
    json_: Json = False,
) -> None:
    """Checkpoint a running sandbox (it keeps running) into a new snapshot; the snapshot becomes the
    sandbox's new base (its next snapshot is a child of this one)."""
    if (sandbox_id is None) == (function is None):
        raise typer.BadParameter("give a SANDBOX_ID or --function, not both", param_hint="SANDBOX_ID")
    with client(ctx) as c:
        snap = c.snapshot(sandbox_id=sandbox_id, function=function, labels=out.parse_pairs(label, "label"))
    stored = _size(snap.sizes.get("stored_bytes"))
    out.print_done(snap, json_, f"created snapshot {snap.id} ({stored} stored)", result=snap.id)


@snapshot_app.command("ls")
def snapshot_ls(
    ctx: typer.Context,
    function: Annotated[str | None, typer.Option("--function", "-f", help="Only this function's.")] = None,
    json_: Json = False,
) -> None:
    """List snapshots (oldest first)."""
    with client(ctx) as c:
        snaps = c.list_snapshots(function=function)
    rows = [
        (s.id, s.function, s.kind, s.parent, s.created_at, _size(s.sizes.get("stored_bytes")), s.in_use_by)
        for s in snaps
    ]
    columns = ["ID", "FUNCTION", "KIND", "PARENT", "CREATED", "STORED", "IN USE BY"]
    out.print_listing(snaps, json_, columns, rows, empty="no snapshots")


@snapshot_app.command("inspect")
def snapshot_inspect(ctx: typer.Context, snapshot_id: str, json_: Json = False) -> None:
    """Show one snapshot: origin, parent chain link, sizes, children and users."""
    with client(ctx) as c:
        snap = c.get_snapshot(snapshot_id)
    if json_:
        out.print_json(snap)
        return
    from rich.table import Table

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in (
        ("id", snap.id),
        ("kind", f"{snap.kind} ({'restorable' if snap.restorable else 'files only'})"),
        ("function", snap.function),
        ("source sandbox", snap.source_sandbox),
        ("parent", snap.parent),
        ("created", snap.created_at),
        ("logical size", _size(snap.sizes.get("logical_bytes"))),
        ("stored size", _size(snap.sizes.get("stored_bytes"))),
        ("files", snap.sizes.get("files")),
        ("labels", ", ".join(f"{k}={v}" for k, v in snap.labels.items())),
        ("children", snap.children),
        ("in use by", snap.in_use_by),
        ("merge", snap.merge),
    ):
        table.add_row(key, out.text(out.cell_text(value)))
    out.stdout().print(table)


@snapshot_app.command("rm")
def snapshot_rm(
    ctx: typer.Context,
    snapshot_ids: list[str],
    force: Annotated[
        bool, typer.Option("--force", help="Delete even while in use or with children.")
    ] = False,
) -> None:
    """Delete snapshots (refused while sandboxes, functions or child snapshots use one, unless --force)."""
    with client(ctx) as c:
        out.for_each(snapshot_ids, lambda sid: c.delete_snapshot(sid, force=force), "deleted snapshot {}")


@snapshot_app.command("gc")
def snapshot_gc(ctx: typer.Context, json_: Json = False) -> None:
    """Free the storage of deleted snapshots."""
    with client(ctx) as c:
        report = c.gc_snapshots()
    freed = _size(report.freed_bytes)
    out.print_done(report, json_, f"removed {report.removed_blobs} blob(s), freed {freed}")


@snapshot_app.command("restore")
def snapshot_restore(
    ctx: typer.Context,
    snapshot_id: str,
    seed: Annotated[
        int | None, typer.Option(min=0, help="Seed its random generators (= copy 0 of a branch).")
    ] = None,
    json_: Json = False,
) -> None:
    """Start a new sandbox from a snapshot (invoke it with `faas sandbox invoke`)."""
    with client(ctx) as c:
        sb = c.restore(snapshot_id, seed=seed)
    message = f"restored {snapshot_id} as sandbox {sb.id} in {sb.restore_ms:g} ms"
    out.print_done(sb, json_, message, result=sb.id)


def branch(
    ctx: typer.Context,
    snapshot_id: str,
    count: Annotated[int, typer.Option("--count", "-n", min=1, max=64, help="How many copies.")] = 2,
    seed: Annotated[
        int | None, typer.Option(min=0, help="Copy k's random generators are seeded from (SEED, k).")
    ] = None,
    json_: Json = False,
) -> None:
    """Start N independent copies of a snapshot (each reseeds its random generators: from the kernel,
    or from (--seed, k) for copy k, so the same command repeats the same random sequences)."""
    with client(ctx) as c:
        copies = c.branch(snapshot_id, count, seed=seed)
    out.print_listing(copies, json_, _SANDBOX_COLUMNS, _sandbox_rows(copies))


def print_merge_report(report: Any) -> None:
    """Taken changes per branch, then conflicts (path, kind, each side, resolution)."""
    from rich.table import Table

    console = out.stdout()
    console.print(out.text(f"strategy: {report.strategy}", style="bold"))
    for label in report.branches:
        taken = report.taken.get(label, [])
        dropped = report.dropped.get(label, [])
        console.print(f"  {label}: {len(taken)} change(s) taken, {len(dropped)} dropped")
    if not report.conflicts:
        console.print(out.text("no conflicts", style="green"))
        return
    table = Table(title=f"{len(report.conflicts)} conflict(s)", title_style="bold red", header_style="bold")
    for column in ("PATH", "KIND", "SIDES", "RESOLUTION"):
        table.add_column(column, overflow="fold")
    for c in report.conflicts:
        sides = "\n".join(f"{k}: {v}" for k, v in c.sides.items())
        kept = "".join(f"\nkept {k} → /{v}" for k, v in c.kept_copies.items())
        table.add_row("/" + c.path, c.kind, sides, c.resolution + kept)
    console.print(table)


def merge(
    ctx: typer.Context,
    ids: Annotated[
        list[str],
        typer.Argument(
            help="Branches, in order: snapshot ids (snap-...), sandbox ids (fd-...) or instance ids (in-...)."
        ),
    ],
    strategy: Annotated[
        str,
        typer.Option(help="union | intersection | latest | ours | theirs | fail"),
    ] = "fail",
    json_: Json = False,
) -> None:
    """Merge the file changes of branches into a new snapshot, against their common base snapshot
    (live sandboxes and instances are snapshotted first)."""
    from faasd.sdk.errors import Conflict
    from faasd.sdk.models import MergeReport, convert

    with client(ctx) as c:
        try:
            result = c.merge(branches=ids, strategy=strategy)
        except Conflict as exc:
            report = exc.details.get("report")
            if report is None:
                raise
            if json_:
                out.print_json({"error": "conflict", "report": report})
            else:
                print_merge_report(convert(report, MergeReport))
            out.fail(exc.message if hasattr(exc, "message") else str(exc))
    if json_:
        out.print_json(result)
        return
    print_merge_report(result.report)
    out.success(f"merged into snapshot {result.snapshot.id}")
    typer.echo(result.snapshot.id)


@sandbox_app.command("ls")
def sandbox_ls(ctx: typer.Context, json_: Json = False) -> None:
    """List restored sandboxes."""
    with client(ctx) as c:
        sandboxes = c.list_sandboxes()
    rows = _sandbox_rows(sandboxes)
    out.print_listing(sandboxes, json_, _SANDBOX_COLUMNS, rows, empty="no restored sandboxes")


@sandbox_app.command("invoke")
def sandbox_invoke(
    ctx: typer.Context,
    sandbox_id: str,
    data: Annotated[str | None, typer.Option("--data", "-d", help="Body; @file or - for stdin.")] = None,
) -> None:
    """Invoke the function running in a restored sandbox; prints its response body."""
    with client(ctx) as c:
        result = c.invoke_sandbox(sandbox_id, out.read_data(data))
    out.write_bytes(result.content, newline=True)
    if not result.ok:
        raise typer.Exit(1)


@sandbox_app.command("rm")
def sandbox_rm(ctx: typer.Context, sandbox_ids: list[str]) -> None:
    """Destroy restored sandboxes."""
    with client(ctx) as c:
        out.for_each(sandbox_ids, c.delete_sandbox, "removed sandbox {}")
