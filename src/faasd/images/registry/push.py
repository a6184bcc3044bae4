"""Push an image from the image store to a registry: blobs (skipped when present, mounted from another
repository of the same registry when the image has a ref there, else uploaded with one PUT or in
chunks), then the manifest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from faasd.content import ContentStore
from faasd.errors import NotFoundError
from faasd.images import models as m
from faasd.images.registry.client import RegistryClient, RegistryOptions
from faasd.images.registry.pull import PullEvent, PullProgress, _emit, _first
from faasd.images.registry.reference import Reference, parse
from faasd.images.store import ImageStore

MONOLITHIC_MAX = 32 * 1024 * 1024
"""Blobs up to this size go up in one PUT; larger ones in chunks (PATCH) unless ``chunk_size`` is set."""
DEFAULT_CHUNK = 8 * 1024 * 1024


@dataclass
class PushResult:
    ref: str
    digest: str
    """Digest of the manifest the registry now serves under ``ref``."""
    size: int
    uploaded: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


class Pusher:
    def __init__(
        self,
        store: ImageStore,
        options: RegistryOptions,
        *,
        concurrency: int = 4,
        chunk_size: int | None = None,
    ) -> None:
        self.store = store
        self.content: ContentStore = store.content
        self.options = options
        self.concurrency = concurrency
        self.chunk_size = chunk_size
        """Force chunked uploads of this many bytes per PATCH (None: monolithic up to MONOLITHIC_MAX)."""

    def _local(self, r: Reference, source: str | None, ref: str) -> m.Image:
        for candidate in (source, r.store_ref, ref):
            if candidate:
                try:
                    return self.store.get(candidate)
                except NotFoundError:
                    continue
        raise NotFoundError(
            f"image {source or ref} is not in the local image store; tag an image with that name first "
            f"(faas image tag IMAGE {ref}) or import/pull it",
            image=source or ref,
        )

    async def push(
        self, ref: str, source: str | None = None, progress: PullProgress | None = None
    ) -> PushResult:
        """Push the local image ``source`` (default: the one named ``ref``) to ``ref``."""
        r = parse(ref)
        img = self._local(r, source, ref)
        manifest = self.content.read_bytes(img.manifest_digest, m.MAX_JSON_BYTES)
        doc = m.parse_json(manifest, "manifest")
        media_type = (doc.get("mediaType") if isinstance(doc, dict) else None) or m.MT_OCI_MANIFEST
        man = m.parse_model(m.Manifest, manifest, "manifest")
        blobs = list({d.digest: d for d in [man.config, *man.layers]}.values())
        mount_from = self._mount_source(img, r)
        result = PushResult(str(r), img.manifest_digest, img.size)
        async with RegistryClient(r, self.options, push=True) as client:
            sem = asyncio.Semaphore(self.concurrency)

            async def one(desc: m.Descriptor) -> None:
                async with sem:
                    await self._push_blob(client, desc, mount_from, result, progress)

            try:
                async with asyncio.TaskGroup() as tg:
                    for desc in blobs:
                        tg.create_task(one(desc))
            except BaseExceptionGroup as group:
                raise _first(group) from None
            result.digest = await client.put_manifest(r.digest or r.reference, manifest, media_type)
        _emit(progress, PullEvent("done", f"pushed {r}", None, img.size, img.size))
        return result

    @staticmethod
    def _mount_source(img: m.Image, target: Reference) -> str | None:
        for name in img.refs:
            try:
                other = parse(name)
            except Exception:
                continue
            if other.registry == target.registry and other.repository != target.repository:
                return other.repository
        return None

    async def _push_blob(
        self,
        client: RegistryClient,
        desc: m.Descriptor,
        mount_from: str | None,
        result: PushResult,
        progress: PullProgress | None,
    ) -> None:
        what = f"blob {desc.digest[:19]}"
        if await client.blob_exists(desc.digest):
            result.existing.append(desc.digest)
            _emit(progress, PullEvent("upload", f"{what} already there", desc.digest, desc.size, desc.size))
            return
        mounted, location = await client.start_upload(desc.digest if mount_from else None, mount_from)
        if mounted:
            result.mounted.append(desc.digest)
            _emit(progress, PullEvent("upload", f"{what} mounted", desc.digest, desc.size, desc.size))
            return
        chunk = self.chunk_size or (DEFAULT_CHUNK if desc.size > MONOLITHIC_MAX else None)
        await client.upload(
            location, desc.digest, desc.size, self._chunks(desc, chunk or 1024 * 1024, progress), chunk
        )
        result.uploaded.append(desc.digest)

    async def _chunks(
        self, desc: m.Descriptor, size: int, progress: PullProgress | None
    ) -> AsyncIterator[bytes]:
        done = 0
        with self.content.open(desc.digest) as f:
            while data := f.read(size):
                done += len(data)
                yield data
                _emit(progress, PullEvent("upload", f"blob {desc.digest[:19]}", desc.digest, done, desc.size))
