"""The image store: import, look up, lease, remove, garbage-collect and write images.

On disk (see docs/ARCHITECTURE.md)::

    content/blobs/sha256/<hex>          manifests, configs, layers (as shipped) - faasd.content
    layers/<chain-id-hex>/rootfs/       a layer unpacked once (overlay whiteouts), shared read-only
    layers/<chain-id-hex>/.complete     written before the dir is renamed into place
    layers/.locks/<chain-id-hex>.lock   flock while unpacking, so concurrent imports unpack once
    images/index.json                   {"images": {id: {...}}, "refs": {ref: manifest digest}}
    images/index.lock                   flock guarding read-modify-write of index.json
    images/gc.lock                      imports/writers hold it shared, gc exclusive

Every import or write is a transaction: blobs and layer dirs it created are removed again if it
fails (unless another import is in flight, in which case the next ``gc`` collects them), and refs
are only written once everything is verified and unpacked.
"""

from __future__ import annotations

from faasd.images.export import ImageExporter
from faasd.images.extract import ExtractLimits
from faasd.images.gc import ImageCollector
from faasd.images.importer import ImageImporter
from faasd.images.index import INDEX_VERSION
from faasd.images.models import GcReport, Image, ImageConfig, Layer, ProgressEvent
from faasd.images.refs import normalize_ref
from faasd.images.txn import ProgressCallback
from faasd.images.writer import ImageWriter


class ImageStore(ImageImporter, ImageWriter, ImageExporter, ImageCollector):
    """See module docstring. Safe to use from several processes and threads at once.

    The store is assembled from its parts, each in its own module: the index (``index``: refs, lookups,
    leases, removal), unpacked layers and transactions (``unpack``), imports (``importer``), the writer
    (``writer``), export (``export``) and garbage collection (``gc``).
    """


__all__ = [
    "INDEX_VERSION",
    "ExtractLimits",
    "GcReport",
    "Image",
    "ImageConfig",
    "ImageStore",
    "Layer",
    "ProgressCallback",
    "ProgressEvent",
    "normalize_ref",
]
