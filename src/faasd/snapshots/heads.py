"""What a snapshot is, without its file trees: listing and filtering a store that holds many snapshots.

A manifest lists every file of a snapshot's trees (thousands for an instance with installed packages), and
reading all of them to find one snapshot by its labels or parent cost a `checkpointed` function's cold start
~12 ms with 100 small snapshots in the store and ~1 s with 100 of 2,000 files each. :class:`ManifestHeads`
keeps each manifest's head (id, creation time, meta, sizes) once it was read: manifests are written once
(atomically, under a new name) and never changed, and a file whose identity (inode, mtime, size) changed is
read again; a listing then costs one ``scandir`` with its ``stat``s.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from faasd.snapshots.manifest import SnapshotHead


class ManifestHeads:
    """The heads of the manifests in one directory, read once each (see the module)."""

    def __init__(self, manifests_dir: Path, prefix: str) -> None:
        self.dir = manifests_dir
        self.prefix = prefix
        self._heads: dict[str, tuple[tuple[int, int, int], SnapshotHead]] = {}
        self._lock = threading.Lock()
        self.reads = 0
        """Manifests read (and parsed) so far."""

    def list(self) -> list[SnapshotHead]:
        """Every snapshot's head, oldest first."""
        out: list[SnapshotHead] = []
        seen: set[str] = set()
        with os.scandir(self.dir) as entries:
            for entry in entries:
                name = entry.name
                if not (name.startswith(self.prefix) and name.endswith(".json")):
                    continue
                try:
                    head = self._read(name, entry.path, entry.stat())
                except FileNotFoundError:
                    continue  # deleted meanwhile
                seen.add(name)
                out.append(head)
        with self._lock:
            for gone in set(self._heads) - seen:
                del self._heads[gone]
        out.sort(key=lambda h: h.created)
        return out

    def get(self, name: str) -> SnapshotHead | None:
        """The head of the manifest file ``name`` in the directory (None: there is none)."""
        path = self.dir / name
        try:
            return self._read(name, str(path), path.stat())
        except FileNotFoundError:
            return None

    def _read(self, name: str, path: str, st: os.stat_result) -> SnapshotHead:
        """``name``'s head: the one kept if the file is the one it was read from, else read now."""
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._heads.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        head = SnapshotHead.from_json(json.loads(Path(path).read_bytes()))
        with self._lock:
            self._heads[name] = (key, head)
            self.reads += 1
        return head
