"""Content store: immutable, verified blobs addressed by sha256 digest (containerd-like)."""

from faasd.content.digest import chain_ids, sha256_bytes
from faasd.content.store import BlobInfo, BlobWriter, ContentStore

__all__ = ["BlobInfo", "BlobWriter", "ContentStore", "chain_ids", "sha256_bytes"]
