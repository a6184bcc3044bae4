"""Per-sandbox root filesystems: overlayfs over read-only image layers, size-bounded upper, copy fallback."""

from faasd.rootfs.overlay import TMPFS_MAX_MB, OverlayRootfs, choose_backend

__all__ = ["TMPFS_MAX_MB", "OverlayRootfs", "choose_backend"]
