"""Pull an image from a registry into the content and image stores.

The manifest is fetched (an index / manifest list is resolved to linux/<host arch>), then the config and
layers are downloaded concurrently into the content store, each verified against its digest; a
download cut off mid-blob continues with an HTTP Range request where it stopped (also in a later pull:
the partial blob waits in the content store's ingest). The image is then imported through the image
store like an OCI layout, inside one transaction: a failure leaves no blob, layer or ref behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from faasd.content import ContentStore
from faasd.errors import ConflictError, DigestMismatchError, FaasdError, InvalidInputError, RegistryError
from faasd.images import models as m
from faasd.images.archive import host_arch
from faasd.images.models import Image, ProgressEvent
from faasd.images.registry.client import FetchedManifest, RegistryClient, RegistryOptions
from faasd.images.registry.layout import ContentLayout
from faasd.images.registry.reference import Reference, parse
from faasd.images.store import ImageStore


@dataclass(frozen=True)
class PullEvent:
    """Reported to a pull's ``progress`` callback.

    ``phase``: ``resolve`` (manifest), ``download`` (one blob: ``digest``, ``done``/``total`` bytes),
    ``unpack`` (the image store importing; ``done``/``total`` bytes of all layers), ``done``.
    """

    phase: str
    description: str
    digest: str | None = None
    done: int = 0
    total: int | None = None


PullProgress = Callable[[PullEvent], None]


def _emit(progress: PullProgress | None, event: PullEvent) -> None:
    if progress is not None:
        progress(event)


class Puller:
    """Pulls images into ``store``; see module docstring."""

    def __init__(
        self,
        store: ImageStore,
        options: RegistryOptions,
        *,
        concurrency: int = 4,
        retries: int = 3,
        retry_delay_s: float = 0.5,
    ) -> None:
        self.store = store
        self.content: ContentStore = store.content
        self.options = options
        self.concurrency = concurrency
        self.retries = retries
        self.retry_delay_s = retry_delay_s

    async def pull(self, ref: str | Reference, progress: PullProgress | None = None) -> Image:
        r = parse(ref) if isinstance(ref, str) else ref
        async with RegistryClient(r, self.options) as client:
            _emit(progress, PullEvent("resolve", f"resolving {r}"))
            fetched = await self._resolve(client, await client.get_manifest(r.reference))
            man = m.parse_model(m.Manifest, fetched.data, f"manifest of {r}")
            for layer in man.layers:
                if layer.media_type and layer.media_type not in m.LAYER_TYPES:
                    raise InvalidInputError(
                        f"image {r}: layer {layer.digest} has media type {layer.media_type!r}, "
                        "which faasd cannot unpack (it reads tar, tar+gzip and tar+zstd layers)",
                        image=str(r),
                    )
            with self.store.transaction() as txn:
                info = self.content.write_bytes(fetched.data, fetched.digest)
                if info.created:
                    txn.blobs.add(info.digest)
                blobs = list({d.digest: d for d in [man.config, *man.layers]}.values())
                sem = asyncio.Semaphore(self.concurrency)

                async def one(desc: m.Descriptor) -> None:
                    async with sem:
                        if await self._download(client, desc, progress):
                            txn.blobs.add(desc.digest)

                try:
                    async with asyncio.TaskGroup() as tg:
                        for desc in blobs:
                            tg.create_task(one(desc))
                except BaseExceptionGroup as group:
                    error = _first(group)
                    if isinstance(error, FaasdError) and not error.details.get("resumable"):
                        self._discard_partials(blobs)  # not a network failure: nothing to resume
                    raise error from None

                def unpack_progress(ev: ProgressEvent) -> None:
                    _emit(progress, PullEvent("unpack", ev.description, None, ev.bytes_done, None))

                layout = ContentLayout(self.content, fetched.digest, fetched.media_type, f"image {r}")
                image = await asyncio.to_thread(
                    self.store.import_source, layout, txn, r.store_ref, unpack_progress
                )
        _emit(progress, PullEvent("done", f"pulled {r}", None, image.size, image.size))
        return image

    def _discard_partials(self, blobs: list[m.Descriptor]) -> None:
        for desc in blobs:
            try:
                writer = self.content.resumable_writer(desc.digest)
            except ConflictError:
                continue  # another pull is downloading it
            writer.abort()

    async def _resolve(self, client: RegistryClient, fetched: FetchedManifest) -> FetchedManifest:
        """Follow an index / manifest list to the manifest for linux/<host arch>."""
        for _ in range(4):
            doc = m.parse_json(fetched.data, f"manifest of {client.image}")
            is_index = fetched.media_type in m.INDEX_TYPES or (
                isinstance(doc, dict) and "manifests" in doc and "layers" not in doc
            )
            if not is_index:
                if isinstance(doc, dict) and doc.get("schemaVersion") == 1:
                    raise InvalidInputError(
                        f"image {client.image} uses the Docker schema 1 manifest, which faasd does not read; "
                        "push it again with a current tool",
                        image=client.image,
                    )
                return fetched
            index = m.parse_model(m.Index, fetched.data, f"index of {client.image}")
            arch = host_arch()
            chosen = None
            for desc in index.manifests:
                p = desc.platform
                if p is not None and p.os == "linux" and p.architecture == arch:
                    chosen = desc
                    break
            if chosen is None:
                have = sorted(
                    f"{d.platform.os}/{d.platform.architecture}"
                    for d in index.manifests
                    if d.platform is not None and d.platform.os != "unknown"
                )
                raise InvalidInputError(
                    f"image {client.image} has no linux/{arch} variant (it has: {', '.join(have) or 'none'})",
                    image=client.image,
                )
            fetched = await client.get_manifest(chosen.digest)
        raise InvalidInputError(f"image {client.image}: image indexes nested too deeply")

    async def _download(
        self, client: RegistryClient, desc: m.Descriptor, progress: PullProgress | None
    ) -> bool:
        """Download one blob into the content store (resuming); True if this call added it."""
        what = f"blob {desc.digest[:19]}"
        if self.content.exists(desc.digest):
            _emit(
                progress, PullEvent("download", f"{what} already present", desc.digest, desc.size, desc.size)
            )
            return False
        failures = 0
        while True:
            writer = self.content.resumable_writer(desc.digest)
            try:
                if writer.size > desc.size:
                    writer.reset()
                refused = False
                if writer.size < desc.size:
                    async with client.blob(desc.digest, writer.size) as resp:
                        refused = resp.status_code == 416
                        if refused or (resp.status_code == 200 and writer.size):
                            writer.reset()  # the registry cannot continue there: start over
                        if not refused:
                            _emit(progress, PullEvent("download", what, desc.digest, writer.size, desc.size))
                            async for chunk in resp.aiter_raw():  # unbuffered: a cut read keeps all it got
                                writer.write(chunk)
                                if writer.size > desc.size:
                                    break
                                _emit(
                                    progress, PullEvent("download", what, desc.digest, writer.size, desc.size)
                                )
                if refused:
                    raise httpx.RemoteProtocolError("the registry refused to continue the partial download")
                try:
                    info = writer.commit(desc.digest, desc.size)
                except InvalidInputError as exc:
                    raise DigestMismatchError(
                        f"blob {desc.digest} of image {client.image} from registry {client.host} is corrupt: "
                        f"{exc.message}; it was discarded, nothing of the image was kept",
                        image=client.image,
                        registry=client.host,
                        digest=desc.digest,
                    ) from None
                return info.created
            except httpx.TransportError as exc:
                writer.suspend()
                failures += 1
                if failures > self.retries:
                    raise RegistryError(
                        f"downloading {what} of image {client.image} from registry {client.host} failed "
                        f"{failures} times ({type(exc).__name__}: {exc}); the {writer.size} bytes received "
                        "are "
                        "kept: pull again to continue where it stopped",
                        image=client.image,
                        registry=client.host,
                        resumable=True,
                    ) from None
                await asyncio.sleep(self.retry_delay_s * failures)
            except asyncio.CancelledError:
                writer.suspend()  # another blob failed; what this one got is kept for the next pull
                raise
            except BaseException:
                writer.abort()
                raise


def _first(group: BaseExceptionGroup) -> BaseException:
    """The error to show from a failed set of downloads: a faasd error if there is one."""
    flat: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        e = stack.pop()
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        else:
            flat.append(e)
    return next((e for e in flat if isinstance(e, FaasdError)), flat[0])
