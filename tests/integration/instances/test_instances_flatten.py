"""Persistent instances through many stop/start cycles: the snapshot chain (and so the overlay lowers of
the instance's sandbox) stays bounded, and the files are exactly what the cycles left behind.

Every cycle runs the same shell script twice: inside the instance (``D=/data``) and on the host in a
temp dir. The trees are then compared entry by entry (type, mode, content / link target, hard-link
groups), so whiteouts, opaque directories, overwrites, hard links and symlinks all have to survive the
flattening of the chain.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from instances_env import InstanceEnv

from faasd.snapshots.service import MAX_CHAIN_LENGTH, merge_branches
from faasd.snapshots.store import SnapshotStore

CYCLES = 20

# dumps a tree as {relpath: [type, mode, content-or-target, hardlink-group]} (stdlib only: runs in the
# instance with the image's python3 and on the host)
DUMP = r"""
import json, os, stat, sys
root = sys.argv[1]
out, groups = {}, {}
for dirpath, dirnames, filenames in os.walk(root):
    for name in sorted(dirnames + filenames):
        p = os.path.join(dirpath, name)
        rel = os.path.relpath(p, root)
        st = os.lstat(p)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ["symlink", 0, os.readlink(p), None]
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ["dir", mode, None, None]
        else:
            with open(p) as f:
                data = f.read()
            group = None
            if st.st_nlink > 1:
                group = groups.setdefault(st.st_ino, rel)
            out[rel] = ["file", mode, data, group]
print(json.dumps(out, sort_keys=True))
"""


def cycle_script(i: int) -> str:
    """What cycle ``i`` (1-based) does to ``$D``: overwrites, deletions, replaced dirs, links."""
    s = [
        "set -e",
        'mkdir -p "$D/keep" "$D/box"',
        f'echo gen-{i} > "$D/counter"',
        f'echo file-{i} > "$D/keep/f{i}"',
    ]
    if i % 3 == 0:
        s.append(f'rm "$D/keep/f{i - 2}"')  # delete a file written in an older cycle
    if i % 5 == 0:
        # replace a directory that has content in older layers: an opaque dir in the upper
        s.append(f'rm -rf "$D/box" && mkdir "$D/box" && echo box-{i} > "$D/box/b{i}"')
    else:
        s.append(f'echo a-{i} > "$D/box/a{i}"')
    if i == 9:
        s.append('echo first > "$D/phoenix"')
    if i == 10:
        s.append('rm "$D/phoenix"')
    if i == 13:
        s.append('echo second > "$D/phoenix"')
    if i == 11:
        s.append('echo linked > "$D/hl1" && ln "$D/hl1" "$D/hl2"')
    if i == 12:
        s.append('chmod 600 "$D/keep/f12"')
    if i == 14:
        s.append('ln -s keep/f14 "$D/link"')
    if i == 15:
        s.append('mkdir -p "$D/deep/a/b" && echo deep > "$D/deep/a/b/c"')
    if i == 17:
        s.append('rm -rf "$D/deep/a" && mkdir -p "$D/deep/a" && echo new > "$D/deep/a/n"')
    return "\n".join(s)


async def _exec(ie: InstanceEnv, iid: str, command: object) -> dict[str, Any]:
    r = await ie.client.post(f"/api/v1/instances/{iid}/exec", json={"command": command})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    assert out["exit_code"] == 0, out
    return out


def _overlay_lowers(rootfs: Path) -> int | None:
    """Number of lower dirs of the overlay mounted at ``rootfs`` (from /proc/self/mountinfo)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] != str(rootfs):
            continue
        opts = line.split(" - ", 1)[1].split()[2]
        for opt in opts.split(","):
            if opt.startswith("lowerdir="):
                return len(opt.removeprefix("lowerdir=").split(":"))
        return sum(1 for o in opts.split(",") if o.startswith("lowerdir+="))
    return None


def _sandbox_lowers(ie: InstanceEnv, iid: str) -> tuple[int, int | None]:
    assert ie.platform.instances is not None
    sb = ie.platform.instances.sandbox_of(iid)
    assert sb.rootfs is not None
    return len(sb.spec.lowers), _overlay_lowers(sb.rootfs.path)


async def test_many_stop_start_cycles_keep_chain_bounded_and_files_exact(
    inst_env: InstanceEnv, tmp_path: Path
) -> None:
    ie = inst_env
    service = ie.platform.instances
    assert service is not None
    store: SnapshotStore = service.store
    r = await ie.client.post("/api/v1/instances", json={"image": "faasd/python:latest", "disk_gb": 0.25})
    assert r.status_code == 201, r.text
    iid = r.json()["id"]
    image_lowers, _ = _sandbox_lowers(ie, iid)
    host = tmp_path / "host"
    host.mkdir()
    chains: list[int] = []
    lowers: list[int] = []
    mounted: list[int | None] = []
    user_snap: str | None = None
    sibling = ""
    for i in range(1, CYCLES + 1):
        script = cycle_script(i)
        # the same changes on the host copy (only under the temp dir)
        subprocess.run(["sh", "-c", f"D={host}\n{script}"], check=True)
        image_paths = ""  # changes to image content, only inside the instance
        if i == 1:
            image_paths = "rm /etc/issue"  # an image file deleted once: must stay deleted
        if i == 2:
            image_paths = "rm -rf /usr/share/doc"  # an image dir deleted ...
        if i == 7:
            image_paths = "mkdir -p /usr/share/doc && echo mine > /usr/share/doc/only"  # ... recreated
        await _exec(ie, iid, ["sh", "-c", f"D=/data\n{script}\n{image_paths}"])
        if i == 3:
            # a user-visible CRIU snapshot on top of the instance's chain: must stay restorable
            user_snap = (await service.snapshot(iid, {"test": "flatten"})).id
        r = await ie.client.post(f"/api/v1/instances/{iid}/stop")
        assert r.status_code == 200, r.text
        fs = r.json()["fs_snapshot"]
        chains.append(len(store.chain(fs)))
        if i == 5:
            # another instance on one of this instance's stop snapshots (it gets flattened away)
            r = await ie.client.post("/api/v1/instances", json={"snapshot_id": fs, "disk_gb": 0.25})
            assert r.status_code == 201, r.text
            sibling = r.json()["id"]
            assert (await ie.client.post(f"/api/v1/instances/{sibling}/stop")).status_code == 200
        r = await ie.client.post(f"/api/v1/instances/{iid}/start")
        assert r.status_code == 200, r.text
        n, m = _sandbox_lowers(ie, iid)
        lowers.append(n)
        mounted.append(m)
    print(f"\nimage lowers {image_lowers}; chain length after each stop: {chains}")
    print(f"sandbox lowers after each start: {lowers}; overlay lowerdirs: {mounted}")
    assert max(chains) <= MAX_CHAIN_LENGTH
    assert max(lowers) <= image_lowers + MAX_CHAIN_LENGTH
    assert all(m is None or m == n for m, n in zip(mounted, lowers, strict=True))

    # the files are exactly what the cycles left behind
    inside = json.loads((await _exec(ie, iid, ["python3", "-c", DUMP, "/data"]))["stdout"])
    expected = json.loads(
        subprocess.run(["python3", "-c", DUMP, str(host)], check=True, capture_output=True, text=True).stdout
    )
    assert inside == expected
    assert inside["counter"][2] == f"gen-{CYCLES}\n"
    assert inside["hl1"][3] == inside["hl2"][3] == "hl1"  # still one inode
    assert inside["keep/f12"][1] == 0o600
    out = await _exec(ie, iid, "test -e /etc/issue && echo present || echo gone; ls -A /usr/share/doc")
    assert out["stdout"] == "gone\nonly\n"

    # snapshots the chain no longer needs are deleted (gc-able); the user's snapshot and its
    # ancestors are kept and it still restores with the files of cycle 3
    inst = service.get(iid)
    assert inst.fs_snapshot is not None
    current = {s.id for s in store.chain(inst.fs_snapshot)}
    assert user_snap is not None
    kept_for_user = {s.id for s in store.chain(user_snap)}
    stop_snaps = {
        s.id for s in store.list()
        if s.meta.labels.get("faasd.instance") == iid and s.meta.labels.get("kind") == "instance-stop"
    }
    sibling_fs = service.get(sibling).fs_snapshot
    assert sibling_fs is not None
    kept_for_sibling = {s.id for s in store.chain(sibling_fs)}
    # stops 1-5, plus the user's snapshot of cycle 3: a snapshot becomes the instance's new base, so
    # stop 3 is its child (lineage)
    assert len(kept_for_sibling) == 6 and user_snap in kept_for_sibling
    assert stop_snaps <= current | kept_for_user | kept_for_sibling
    assert len(stop_snaps) < CYCLES
    report = store.gc()
    live = {p.name for p in store.mnt_dir.iterdir()}
    assert live <= {s.id for s in store.list()}, report
    # the sibling started on cycle 5's snapshot still has exactly cycle 5's files
    r = await ie.client.post(f"/api/v1/instances/{sibling}/start")
    assert r.status_code == 200, r.text
    out = await _exec(ie, sibling, "cat /data/counter; ls /data/keep | sort | tr '\\n' ' '")
    assert out["stdout"] == "gen-5\nf2 f3 f4 f5 "
    r = await ie.client.post("/api/v1/instances", json={"snapshot_id": user_snap, "disk_gb": 0.25})
    assert r.status_code == 201, r.text
    other = r.json()["id"]
    out = await _exec(ie, other, "cat /data/counter; ls /data/keep | sort | tr '\\n' ' '")
    assert out["stdout"] == "gen-3\nf2 f3 "

    for x in (other, sibling, iid):
        assert (await ie.client.delete(f"/api/v1/instances/{x}")).status_code == 204
    # the deleted instance's own stop snapshots are gone; the user's snapshot chain is intact
    left = {
        s.id for s in store.list()
        if s.meta.labels.get("faasd.instance") == iid and s.meta.labels.get("kind") == "instance-stop"
    }
    assert left <= kept_for_user
    assert not left & (kept_for_sibling - kept_for_user)  # deleted with the last instance using them
    assert [s.id for s in store.chain(user_snap)][-1] == user_snap
    store.delete(user_snap)


async def test_instance_from_a_snapshot_keeps_it_as_base_through_flattening(
    inst_env: InstanceEnv, tmp_path: Path
) -> None:
    """Flattening an instance started from a (short-chained) snapshot merges only its own stop
    snapshots: the source snapshot stays in the chain, so snapshots of two instances started from it
    can still be merged."""
    ie = inst_env
    service = ie.platform.instances
    assert service is not None
    store: SnapshotStore = service.store
    r = await ie.client.post("/api/v1/instances", json={"image": "faasd/python:latest", "disk_gb": 0.25})
    assert r.status_code == 201, r.text
    origin = r.json()["id"]
    await _exec(ie, origin, "mkdir -p /data && echo base > /data/base")
    source = (await service.snapshot(origin)).id
    assert (await ie.client.delete(f"/api/v1/instances/{origin}")).status_code == 204
    r = await ie.client.post("/api/v1/instances", json={"snapshot_id": source, "disk_gb": 0.25})
    assert r.status_code == 201, r.text
    iid = r.json()["id"]
    host = tmp_path / "host"
    host.mkdir()
    (host / "base").write_text("base\n")
    chains: list[list[str]] = []
    for i in range(1, 13):
        script = cycle_script(i)
        subprocess.run(["sh", "-c", f"D={host}\n{script}"], check=True)
        await _exec(ie, iid, ["sh", "-c", f"D=/data\n{script}"])
        r = await ie.client.post(f"/api/v1/instances/{iid}/stop")
        assert r.status_code == 200, r.text
        chains.append([s.id for s in store.chain(r.json()["fs_snapshot"])])
        assert (await ie.client.post(f"/api/v1/instances/{iid}/start")).status_code == 200
    print(f"\nchain lengths (source snapshot first in each): {[len(c) for c in chains]}")
    assert max(len(c) for c in chains) <= MAX_CHAIN_LENGTH
    assert all(c[0] == source for c in chains)
    assert any(len(c) < len(chains[i - 1]) for i, c in enumerate(chains) if i)  # it did flatten
    inside = json.loads((await _exec(ie, iid, ["python3", "-c", DUMP, "/data"]))["stdout"])
    expected = json.loads(
        subprocess.run(["python3", "-c", DUMP, str(host)], check=True, capture_output=True, text=True).stdout
    )
    assert inside == expected

    # a sibling from the same source; their snapshots still merge on the common base
    r = await ie.client.post("/api/v1/instances", json={"snapshot_id": source, "disk_gb": 0.25})
    assert r.status_code == 201, r.text
    sibling = r.json()["id"]
    await _exec(ie, sibling, "echo sib > /data/sibling")
    snaps = [(await service.snapshot(x)).id for x in (iid, sibling)]
    merged, report = merge_branches(service.store, snaps, strategy="fail")
    assert merged.meta.parent == source and not report.conflicts
    r = await ie.client.post("/api/v1/instances", json={"snapshot_id": merged.id, "disk_gb": 0.25})
    assert r.status_code == 201, r.text
    third = r.json()["id"]
    out = await _exec(ie, third, "cat /data/base /data/sibling /data/counter")
    assert out["stdout"] == "base\nsib\ngen-12\n"
    for x in (third, sibling, iid):
        assert (await ie.client.delete(f"/api/v1/instances/{x}")).status_code == 204
