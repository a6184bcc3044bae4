"""Source-directory deploys: a gzip'ed tar of a function's code becomes an image layer at ``/function``.

The archive comes from a client (``faas deploy NAME ./dir``), so it is untrusted: it is unpacked with
the image store's safe extractor (:mod:`faasd.images.extract`: no ``..``, never writes through a
symlink, hard links only inside the archive, no device nodes, bounded size and entry count) into a
private temporary directory, which is then added as one layer on the base image
(``ImageStore.add_layer``) and removed again, whatever happens.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

from faasd.errors import InvalidInputError, NotFoundError
from faasd.images.extract import ExtractLimits, unpack_layer

SOURCE_DEST = "/function"
SOURCE_LIMITS = ExtractLimits(max_bytes=1024**3, max_entries=100_000)
"""Uncompressed bounds of one source archive (the compressed upload is bounded by max_payload_bytes)."""
DEFAULT_BASE_IMAGES = {"python": "faasd/python:latest", "node": "faasd/node:latest"}


SOURCE_REF_PREFIX = "faasd-fn/"
BASE_LABEL = "faasd.source.base"
"""Label of a source-built image naming the image it was built on (a redeploy builds on that again)."""


class SourceImageStore(Protocol):
    def get(self, ref: str) -> Any: ...
    def add_layer(
        self,
        base_ref: str,
        source_dir: Path,
        dest: str = ...,
        ref: str | None = ...,
        config_overrides: Any = ...,
    ) -> Any: ...


def default_base_image(runtime: str | None) -> str:
    """The image a source deploy builds on when the function names none."""
    return DEFAULT_BASE_IMAGES.get(runtime or "python", DEFAULT_BASE_IMAGES["python"])


def source_ref(name: str, archive: bytes) -> str:
    """``faasd-fn/<name>:<first 12 hex of the archive's sha256>`` (same as the CLI's local build)."""
    return f"faasd-fn/{name}:{hashlib.sha256(archive).hexdigest()[:12]}"


def build_source_image(
    images: SourceImageStore,
    name: str,
    base_ref: str,
    archive: bytes,
    tmp_root: Path,
    limits: ExtractLimits = SOURCE_LIMITS,
) -> str:
    """Unpack ``archive`` safely and add it at ``/function`` on ``base_ref``; return the new image ref.

    Blocking (file I/O): call it in a thread. Raises InvalidInputError for a missing base image or a
    rejected archive (the message names the offending entry); the temporary directory never survives.
    """
    if not archive:
        raise InvalidInputError("the source part is empty; send a gzip'ed tar of the function's directory")
    try:
        base = images.get(base_ref)
        labels = dict(base.config.labels or {})
        if base_ref.startswith(SOURCE_REF_PREFIX) and labels.get(BASE_LABEL):
            # a redeploy that names the previous source build: replace its code, do not stack on it
            base_ref = labels[BASE_LABEL]
            base = images.get(base_ref)
            labels = dict(base.config.labels or {})
    except NotFoundError:
        raise InvalidInputError(
            f"base image {base_ref!r} for the source deploy is not in the image store; start the daemon "
            "with its base images, import it (faas images import), or name another image",
            image=base_ref,
        ) from None
    tmp_root.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"source-{name}-", dir=tmp_root))
    try:
        source_dir = workdir / "function"
        try:
            unpack_layer(io.BytesIO(archive), source_dir, "flat", limits, what="source archive")
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"source archive rejected: {exc.message}; send a plain tar.gz of the function's directory",
                **exc.details,
            ) from None
        ref = source_ref(name, archive)
        labels[BASE_LABEL] = base_ref
        images.add_layer(
            base_ref, source_dir, dest=SOURCE_DEST, ref=ref, config_overrides={"labels": labels}
        )
        return ref
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
