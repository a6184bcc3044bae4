"""``ensure_image``: the seam deploy, execute and instances call so a missing image is pulled on demand.

An image already in the store is used as is. A missing one is pulled from its registry (Docker's
naming: ``alpine`` is ``docker.io/library/alpine:latest``; see ``registry_mirrors``) when
``pull_missing_images`` is on; concurrent requests for the same image wait for one pull. Failures say
which image and registry, and how to get the image offline (``faas image import FILE --ref REF``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from faasd.config import Settings
from faasd.errors import InvalidInputError, NotFoundError, RegistryAuthError, RegistryError
from faasd.images.models import Image
from faasd.images.registry import options_from_settings
from faasd.images.registry.reference import parse
from faasd.images.store import ImageStore
from faasd.platform.errors import UnavailableError

if TYPE_CHECKING:  # the registry client needs httpx: imported when a pull or push really happens
    from faasd.images.registry.pull import Puller, PullProgress
    from faasd.images.registry.push import PushResult

log = logging.getLogger(__name__)


class ImageEnsurer:
    def __init__(self, settings: Settings, store: ImageStore | None) -> None:
        self.settings = settings
        self.store = store
        self._locks: dict[str, asyncio.Lock] = {}

    def _present(self, ref: str) -> bool:
        assert self.store is not None
        if self.store.exists(ref):  # also finds images by id / short id
            return True
        r = parse(ref)
        return self.store.exists(r.digest if r.digest and not r.tag else ref)

    def _real_store(self) -> ImageStore:
        if self.store is None:
            raise UnavailableError(
                "pulling and pushing images needs the daemon's image store, which it runs without"
            )
        return self.store

    def puller(self) -> Puller:
        from faasd.images.registry.pull import Puller

        return Puller(self._real_store(), options_from_settings(self.settings))

    async def pull(self, ref: str, progress: PullProgress | None = None) -> Image:
        """Pull ``ref`` (one pull per ref at a time in this process)."""
        lock = self._locks.setdefault(ref, asyncio.Lock())
        async with lock:
            return await self.puller().pull(ref, progress)

    async def push(self, ref: str, source: str | None = None) -> PushResult:
        """Push the local image ``source`` (default: the one named ``ref``) to ``ref``."""
        from faasd.images.registry.push import Pusher

        return await Pusher(self._real_store(), options_from_settings(self.settings)).push(ref, source)

    async def ensure(self, ref: str) -> None:
        """Make sure ``ref`` is in the image store, pulling it when missing (see module docstring)."""
        if self.store is None:
            return  # no real image store (tests of orchestration): the caller's own lookup decides
        try:
            if await asyncio.to_thread(self._present, ref):
                return
        except InvalidInputError:
            return  # not a registry reference: the caller's own lookup reports it
        if not self.settings.pull_missing_images:
            raise NotFoundError(
                f"image {ref!r} is not in the image store and pulling missing images is off "
                f"(FAASD_PULL_MISSING_IMAGES): pull it (faas image pull {ref}) or import it "
                f"(faas image import FILE --ref {ref})",
                image=ref,
            )
        lock = self._locks.setdefault(ref, asyncio.Lock())
        async with lock:
            if await asyncio.to_thread(self._present, ref):
                return
            log.info("image %s is not in the store: pulling it", ref)
            try:
                await self.puller().pull(ref)
            except RegistryAuthError:
                raise
            except RegistryError as exc:
                answered = exc.details.get("status") is not None or "digest" in exc.details
                if answered or exc.details.get("resumable"):
                    raise  # the registry answered (or a download can be continued): its error says it
                raise NotFoundError(
                    f"image {ref!r} is not in the image store and could not be pulled: {exc.message}",
                    image=ref,
                    **{k: v for k, v in exc.details.items() if k != "image"},
                ) from None
