"""Garbage collection: blobs and unpacked layers no image references, temp files, force-removed images
whose leases are gone. Holds ``images/gc.lock`` exclusively (imports hold it shared)."""

from __future__ import annotations

import contextlib

from faasd.content import digest as dg
from faasd.errors import FaasdError
from faasd.filelock import locked_file
from faasd.images.index import ImageIndex
from faasd.images.models import GcReport
from faasd.images.storefs import _rmtree, _tree_size


class ImageCollector(ImageIndex):
    """Garbage collection of the store."""

    def gc(self) -> GcReport:
        """Delete blobs and unpacked layers no image references, stale temp files, and force-removed images
        whose leases are gone. Waits for imports in flight to finish."""
        report = GcReport()
        with locked_file(self._gc_lock), self._locked_index() as data:
            for iid, rec in list(data["images"].items()):
                if rec.get("deleted") and not rec.get("leases"):
                    del data["images"][iid]
                    report.removed_images.append(iid)
            used_blobs, used_chains = self._referenced(data)
            for d in self.content.list():
                if d not in used_blobs:
                    with contextlib.suppress(FaasdError):
                        report.freed_bytes += self.content.size(d)
                    if self.content.delete(d):
                        report.removed_blobs.append(d)
            self.content.clean_ingest()
            if self.layers_dir.is_dir():
                used_hex = {dg.hex_of(c) for c in used_chains}
                for p in self.layers_dir.iterdir():
                    if p.name == ".locks":
                        continue
                    if p.name.startswith(".tmp-") or (dg.is_hex(p.name) and p.name not in used_hex):
                        report.freed_bytes += _tree_size(p)
                        _rmtree(p)
                        if dg.is_hex(p.name):
                            report.removed_layers.append(dg.from_hex(p.name))
                locks = self.layers_dir / ".locks"
                if locks.is_dir():
                    for lk in locks.iterdir():
                        if lk.stem not in used_hex:
                            lk.unlink(missing_ok=True)
        return report
