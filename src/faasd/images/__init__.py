"""Images: import (docker-archive, OCI layout/archive), safe layer extraction, shared unpacked layers,
refcounting + GC, and the image writer used for base images and source deploys."""

from faasd.images.extract import ExtractLimits, UnpackReport, apply_layers, flatten_layer_dirs, unpack_layer
from faasd.images.models import GcReport, Image, ImageConfig, Layer, ProgressEvent
from faasd.images.store import ImageStore, ProgressCallback, normalize_ref

__all__ = [
    "ExtractLimits",
    "GcReport",
    "Image",
    "ImageConfig",
    "ImageStore",
    "Layer",
    "ProgressCallback",
    "ProgressEvent",
    "UnpackReport",
    "apply_layers",
    "flatten_layer_dirs",
    "normalize_ref",
    "unpack_layer",
]
