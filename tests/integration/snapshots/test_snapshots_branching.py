"""Real runc + CRIU: snapshot a counting Python process, restore it, branch it, merge branch filesystems."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.errors import ConflictError, RuntimeFailure
from faasd.runtime import Limits, SandboxManager, SandboxSpec
from faasd.runtime.sandbox import Sandbox
from faasd.snapshots.service import branch, merge_snapshots, restore_snapshot, snapshot_sandbox
from faasd.snapshots.store import SnapshotStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# Counts in memory and prints "<n> <random>" every 20 ms. SIGUSR1 reseeds `random` (stand-in for the
# agent's `restored` frame); SIGUSR2 writes /state/<name> for the name in /run/faasd-io/trigger.
PROG = r"""
import os, random, signal, sys, time
os.makedirs("/state", exist_ok=True)
with open("/state/before.txt", "w") as f:
    f.write("written before the snapshot\n")
n = 0
def reseed(*_):
    random.seed()
def write(*_):
    name = open("/run/faasd-io/trigger").read().strip()
    with open("/state/" + name, "w") as f:
        f.write(f"{name} at {n}\n")
signal.signal(signal.SIGUSR1, reseed)
signal.signal(signal.SIGUSR2, write)
while True:
    n += 1
    print(n, random.random(), flush=True)
    time.sleep(0.02)
"""
LINE = re.compile(rb"^(\d+) (0\.\d+)$")


def parse(out: bytes) -> list[tuple[int, str]]:
    return [(int(m.group(1)), m.group(2).decode()) for line in out.splitlines() if (m := LINE.match(line))]


@pytest.fixture
async def env(
    settings: Settings, unique_id: str, python_rootfs: Path, no_leaks: list[str]
) -> AsyncIterator[dict]:  # type: ignore[type-arg]
    manager = SandboxManager(settings)
    store = SnapshotStore(settings)
    ids = no_leaks

    def new_id(tag: str) -> str:
        sid = f"fd-{unique_id}-{tag}"
        ids.append(sid)
        return sid

    yield {"manager": manager, "store": store, "new_id": new_id, "rootfs": python_rootfs}
    # restored sandboxes are registered with the manager like created ones
    for sb in list(manager._sandboxes.values()):
        await sb.destroy()


async def start_counter(env: dict, tag: str = "src"):  # type: ignore[no-untyped-def,type-arg]
    spec = SandboxSpec(
        id=env["new_id"](tag),
        lowers=[env["rootfs"]],
        args=["python3", "-u", "-c", PROG],
        limits=Limits(memory_mb=128, disk_mb=64, timeout_s=None),
    )
    sb = await env["manager"].create(spec, stdin_pipe=False)
    await sb.start()
    for _ in range(200):
        if len(parse(sb.stdout())) >= 10:
            break
        await asyncio.sleep(0.02)
    assert len(parse(sb.stdout())) >= 10, sb.stderr()
    return sb


async def lines_after(sb: Sandbox, want: int, since: int = 0, timeout: float = 10.0) -> list[tuple[int, str]]:
    """The parsed output lines of ``sb`` from line ``since`` on, once there are at least ``want``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(parse(sb.stdout())[since:]) < want and loop.time() < deadline:
        await asyncio.sleep(0.02)
    got = parse(sb.stdout())[since:]
    assert len(got) >= want, (sb.stdout()[-500:], sb.stderr()[-2000:])
    return got


async def test_snapshot_restore_continues_counting(env: dict) -> None:  # type: ignore[type-arg]
    src = await start_counter(env)
    before = parse(src.stdout())[-1][0]
    snap = await snapshot_sandbox(env["store"], src, leave_running=True)
    at_snapshot = parse(src.stdout())[-1][0]
    # the source keeps running after --leave-running
    await asyncio.sleep(0.3)
    assert parse(src.stdout())[-1][0] > at_snapshot
    assert snap.meta.parent is None and snap.meta.layers == [str(env["rootfs"])]
    assert snap.sizes.logical_bytes > 0 and {"criu", "upper", "bundle"} <= set(snap.trees)

    restored = await restore_snapshot(env["store"], snap.id, env["new_id"]("r1"), manager=env["manager"])
    sb = restored.sandbox
    assert restored.agent_ack is None and restored.timings_ms["restore"] > 0
    assert env["manager"].get(sb.id) is sb and sb.status == "running"
    lines = await lines_after(sb, 5)
    first = lines[0][0]
    # continues from where it was: the dump happened after `before` and before `at_snapshot`
    assert before < first <= at_snapshot + 1, (before, first, at_snapshot)
    assert [n for n, _ in lines] == list(range(first, first + len(lines)))
    # the file written before the snapshot is there (through the snapshot upper as a lower layer)
    assert sb.rootfs.path.joinpath("state/before.txt").read_text() == "written before the snapshot\n"
    assert sb.rootfs.upper is not None and not (sb.rootfs.upper / "state/before.txt").exists()  # CoW
    # the restored copy is a live, independent process
    await sb.destroy()
    assert parse(src.stdout())[-1][0] > first - 20


async def test_branch_three_copies_diverge_and_nested(env: dict) -> None:  # type: ignore[type-arg]
    store: SnapshotStore = env["store"]
    src = await start_counter(env)
    base = await snapshot_sandbox(store, src)
    ids = [env["new_id"](f"b{i}") for i in range(3)]
    copies = [r.sandbox for r in await branch(store, base.id, ids, manager=env["manager"])]
    assert len({c.pid for c in copies}) == 3

    # without a reseed every copy produces the same random stream (identical memory)
    streams = [await lines_after(c, 3) for c in copies]
    starts = [s[0] for s in streams]
    assert len(set(starts)) == 1, starts

    # reseed + write a different file in each copy
    for i, c in enumerate(copies):
        (c.io_dir / "trigger").write_text(f"branch{i}.txt\n")
        await c.kill(signal.SIGUSR1)
        await c.kill(signal.SIGUSR2)
    seen = [len(parse(c.stdout())) for c in copies]
    after = [await lines_after(c, 3, since=n) for c, n in zip(copies, seen, strict=True)]
    assert len({tuple(r for _, r in a[-2:]) for a in after}) == 3  # random streams now differ
    for i, c in enumerate(copies):
        names = sorted(p.name for p in (c.rootfs.path / "state").iterdir())
        assert names == ["before.txt", f"branch{i}.txt"], names
    # counters advance independently: pause one copy, the others keep counting
    await copies[0].pause()
    await asyncio.sleep(0.2)
    frozen_at = len(parse(copies[0].stdout()))
    live_before = parse(copies[1].stdout())[-1][0]
    await asyncio.sleep(0.3)
    assert len(parse(copies[0].stdout())) == frozen_at  # the frozen copy prints nothing
    assert parse(copies[1].stdout())[-1][0] > live_before
    await copies[0].resume()

    # nested: snapshot branch 1, branch that again; the chain is base -> b1 -> nested
    snap_b1 = await snapshot_sandbox(store, copies[1])
    assert snap_b1.meta.parent == base.id
    assert [e.path for e in snap_b1.trees["upper"] if e.path.startswith("state/")] == ["state/branch1.txt"]
    nested = (await restore_snapshot(store, snap_b1.id, env["new_id"]("n1"), manager=env["manager"])).sandbox
    nlines = await lines_after(nested, 3)
    assert nlines[0][0] > streams[1][0][0]
    names = sorted(p.name for p in (nested.rootfs.path / "state").iterdir())
    assert names == ["before.txt", "branch1.txt"]
    assert [s.id for s in store.chain(snap_b1.id)] == [base.id, snap_b1.id]

    # merge: branches 0 and 2 wrote different files -> no conflict; both files in the result
    snap_b0 = await snapshot_sandbox(store, copies[0])
    snap_b2 = await snapshot_sandbox(store, copies[2])
    merged, report = merge_snapshots(store, base.id, [snap_b0.id, snap_b2.id], strategy="fail")
    assert report.conflicts == [] and merged.meta.parent == base.id and "criu" not in merged.trees
    paths = {e.path for e in merged.trees["upper"]}
    assert {"state/branch0.txt", "state/branch2.txt"} <= paths
    # now a conflict: both write the same file differently
    for i in (0, 2):
        (copies[i].io_dir / "trigger").write_text("same.txt\n")
        await asyncio.sleep(0.05)
        await copies[i].kill(signal.SIGUSR2)
    await asyncio.sleep(0.3)
    c0 = await snapshot_sandbox(store, copies[0])
    c2 = await snapshot_sandbox(store, copies[2])
    # lineage: a copy's second snapshot is a child of its first, holding only what changed since
    assert c0.meta.parent == snap_b0.id and c2.meta.parent == snap_b2.id
    assert [e.path for e in c0.trees["upper"] if e.path.startswith("state/")] == ["state/same.txt"]
    side = await snapshot_sandbox(store, copies[0], lineage=False)  # a side capture: not a new head
    assert side.meta.parent == base.id
    assert (await snapshot_sandbox(store, copies[0])).meta.parent == c0.id
    with pytest.raises(ConflictError) as info:
        merge_snapshots(store, base.id, [c0.id, c2.id], strategy="fail")
    kinds = {c["path"]: c["kind"] for c in info.value.details["report"]["conflicts"]}
    assert kinds.get("state/same.txt") == "add/add", kinds
    _m, rep = merge_snapshots(store, base.id, [c0.id, c2.id], strategy="theirs", labels=["b0", "b2"])
    assert next(c for c in rep.conflicts if c.path == "state/same.txt").resolution == "b2"
    # merge across levels: a branch of a branch (its uppers below the base are flattened) + branch 0
    (nested.io_dir / "trigger").write_text("nested.txt\n")
    await nested.kill(signal.SIGUSR2)
    await asyncio.sleep(0.3)
    snap_n = await snapshot_sandbox(store, nested)
    assert [s.id for s in store.chain(snap_n.id)] == [base.id, snap_b1.id, snap_n.id]
    merged2, rep2 = merge_snapshots(store, base.id, [snap_b0.id, snap_n.id], strategy="fail")
    files2 = {e.path for e in merged2.trees["upper"] if e.path.startswith("state/")}
    assert {"state/branch0.txt", "state/branch1.txt", "state/nested.txt"} <= files2, files2
    assert rep2.conflicts == []


async def test_stopped_sandbox_is_refused_and_store_stays_clean(env: dict) -> None:  # type: ignore[type-arg]
    spec = SandboxSpec(
        id=env["new_id"]("dead"), lowers=[env["rootfs"]], args=["true"], limits=Limits(disk_mb=16)
    )
    sb = await env["manager"].create(spec, stdin_pipe=False)
    await sb.start()
    await sb.wait(10)
    with pytest.raises(ConflictError):
        await snapshot_sandbox(env["store"], sb)
    assert env["store"].list() == []
    assert list(env["store"].tmp_dir.iterdir()) == []


async def test_restore_failures_leave_nothing_behind(env: dict) -> None:  # type: ignore[type-arg]
    store: SnapshotStore = env["store"]
    src = await start_counter(env)
    snap = await snapshot_sandbox(store, src)
    # an id that is in use: refused before anything is touched, the source is unaffected
    with pytest.raises(ConflictError):
        await restore_snapshot(store, snap.id, src.id, manager=env["manager"])
    assert src.status == "running"
    # a damaged image: runc/CRIU fail, every step of the new sandbox is undone (checked by no_leaks)
    bad_id = env["new_id"]("bad")
    mat = store.materialized(snap.id)
    assert mat.criu is not None
    (mat.criu / "inventory.img").unlink()  # CRIU refuses at once
    with pytest.raises(RuntimeFailure, match="restore"):
        await restore_snapshot(store, snap.id, bad_id, manager=env["manager"])
    assert env["manager"].get(bad_id) is None
    # garbage pages: CRIU does not finish; the restore times out and is undone as well
    snap2 = await snapshot_sandbox(store, src)
    mat2 = store.materialized(snap2.id)
    assert mat2.criu is not None
    for img in mat2.criu.glob("pages-*.img"):
        img.write_bytes(b"garbage")
    with pytest.raises(RuntimeFailure):
        await restore_snapshot(store, snap2.id, env["new_id"]("bad2"), manager=env["manager"], timeout_s=10)
    # branch is all-or-nothing
    ids = [env["new_id"]("ok0"), env["new_id"]("ok1")]
    with pytest.raises(RuntimeFailure):
        await branch(store, snap.id, ids, manager=env["manager"])
    assert all(env["manager"].get(i) is None for i in ids)
