"""An OCI distribution-API client for one repository: manifests, blobs (ranged), uploads, manifest PUT.

Every failure becomes a faasd error that names the image and the registry host: unreachable
(RegistryError), credentials missing or refused (RegistryAuthError), unknown image (NotFoundError),
content that does not match its digest (DigestMismatchError).
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from faasd.content import digest as dg
from faasd.errors import (
    DigestMismatchError,
    FaasdError,
    NotFoundError,
    RegistryAuthError,
    RegistryError,
)
from faasd.images import models as m
from faasd.images.registry.auth import RegistryAuth
from faasd.images.registry.credentials import CredentialStore
from faasd.images.registry.reference import DOCKER_HUB, DOCKER_HUB_API, Reference

MANIFEST_ACCEPT = ", ".join([m.MT_OCI_INDEX, m.MT_DOCKER_LIST, m.MT_OCI_MANIFEST, m.MT_DOCKER_MANIFEST])
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
ByteProgress = Callable[[int], None]


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries (from faasd's settings)."""

    credentials: CredentialStore
    mirrors: dict[str, str]
    insecure: Sequence[str] = ()
    timeout_s: float = 30.0


@dataclass(frozen=True)
class FetchedManifest:
    data: bytes
    media_type: str
    digest: str


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _error_codes(resp: httpx.Response) -> str:
    try:
        doc = resp.json()
        errors = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errors, list):
            return ", ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError):
        pass
    return ""


class RegistryClient:
    """Talks to the registry holding ``ref`` (or its mirror); use as an async context manager."""

    def __init__(self, ref: Reference, options: RegistryOptions, *, push: bool = False) -> None:
        self.ref = ref
        self.image = str(ref)
        self.host = options.mirrors.get(ref.registry) or (
            DOCKER_HUB_API if ref.registry == DOCKER_HUB else ref.registry
        )
        self.insecure = is_loopback(self.host) or self.host in options.insecure
        # the credentials of the host contacted (a mirror has its own); Docker Hub's API host is docker.io
        creds_host = ref.registry if self.host == DOCKER_HUB_API else self.host
        self.credentials = options.credentials.lookup(creds_host)
        scope = f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"
        self.auth = RegistryAuth(self.host, self.credentials, scope)
        self._timeout = options.timeout_s
        self._http: httpx.AsyncClient | None = None
        self.base = ""

    async def __aenter__(self) -> RegistryClient:
        self._http = httpx.AsyncClient(
            auth=self.auth,
            follow_redirects=True,
            verify=not self.insecure,
            timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 5.0)),
        )
        try:
            await self._ping()
        except BaseException:
            await self._http.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        assert self._http is not None, "use RegistryClient as an async context manager"
        return self._http

    def url(self, path: str) -> str:
        return f"{self.base}/v2/{self.ref.repository}/{path}"

    # -------------------------------------------------------------------------------- errors
    def unreachable(self, exc: BaseException) -> RegistryError:
        return RegistryError(
            f"cannot reach registry {self.host} to get image {self.image}: {type(exc).__name__}: {exc}. "
            "Without network access, import the image from a file instead: "
            f"faas image import FILE --ref {self.ref.store_ref or self.image}",
            image=self.image,
            registry=self.host,
        )

    def check(self, resp: httpx.Response, what: str, ok: Sequence[int] = (200,)) -> None:
        if resp.status_code in ok:
            return
        codes = _error_codes(resp)
        detail = f" ({codes})" if codes else ""
        info: dict[str, Any] = {"image": self.image, "registry": self.host, "status": resp.status_code}
        if resp.status_code == 401:
            if self.auth.sent_credentials:
                raise RegistryAuthError(
                    f"registry {self.host} rejected the credentials for {self.image} while {what}{detail}: "
                    "check the user and password in your docker config.json (docker login)",
                    **info,
                )
            raise RegistryAuthError(
                f"registry {self.host} needs credentials for {self.image} ({what}){detail}: add them to "
                "$DOCKER_CONFIG/config.json, ~/.docker/config.json or FAASD_REGISTRY_AUTH_FILE",
                **info,
            )
        if resp.status_code == 403:
            raise RegistryAuthError(
                f"registry {self.host} denied access to {self.image} while {what}{detail}", **info
            )
        if resp.status_code == 404:
            raise NotFoundError(
                f"image {self.image} not found in registry {self.host} ({what}){detail}: "
                "check the name and tag",
                **info,
            )
        if resp.status_code == 429:
            raise RegistryError(
                f"registry {self.host} is rate-limiting {what} for {self.image}; retry later", **info
            )
        raise RegistryError(
            f"registry {self.host} answered HTTP {resp.status_code} while {what} for {self.image}{detail}",
            **info,
        )

    async def _request(self, method: str, url: str | httpx.URL, what: str, **kw: Any) -> httpx.Response:
        try:
            return await self.http.request(method, url, **kw)
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from None

    # -------------------------------------------------------------------------------- ping
    async def _ping(self) -> None:
        """``GET /v2/`` over HTTPS (plain HTTP for loopback/insecure hosts when HTTPS fails)."""
        schemes = ["https", "http"] if self.insecure else ["https"]
        last: BaseException | None = None
        for scheme in schemes:
            try:
                resp = await self.http.get(f"{scheme}://{self.host}/v2/")
            except httpx.TransportError as exc:
                last = exc
                continue
            self.base = f"{scheme}://{self.host}"
            if resp.status_code in (200, 401):
                if resp.status_code == 401 and self.auth.sent_credentials:
                    self.check(resp, "logging in")
                return
            self.check(resp, "checking the registry API (GET /v2/)")
        assert last is not None
        raise self.unreachable(last)

    # -------------------------------------------------------------------------------- manifests
    async def get_manifest(self, reference: str) -> FetchedManifest:
        resp = await self._request(
            "GET",
            self.url(f"manifests/{reference}"),
            "fetching the manifest",
            headers={"Accept": MANIFEST_ACCEPT},
        )
        self.check(resp, f"fetching manifest {reference}")
        data = resp.content
        if len(data) > MAX_MANIFEST_BYTES:
            raise RegistryError(
                f"manifest {reference} of {self.image} is larger than {MAX_MANIFEST_BYTES} bytes"
            )
        actual = dg.sha256_bytes(data)
        expected = reference if dg.is_digest(reference) else resp.headers.get("Docker-Content-Digest")
        if expected and dg.is_digest(expected) and expected != actual:
            raise DigestMismatchError(
                f"manifest {reference} of {self.image} from {self.host} hashes to {actual}, "
                f"expected {expected}: "
                "the registry sent corrupt or tampered content; nothing was kept",
                image=self.image,
                registry=self.host,
                expected=expected,
                actual=actual,
            )
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return FetchedManifest(data, media_type, actual)

    async def put_manifest(self, reference: str, data: bytes, media_type: str) -> str:
        resp = await self._request(
            "PUT",
            self.url(f"manifests/{reference}"),
            "pushing the manifest",
            content=data,
            headers={"Content-Type": media_type},
        )
        self.check(resp, f"pushing manifest {reference}", ok=(200, 201))
        return resp.headers.get("Docker-Content-Digest") or dg.sha256_bytes(data)

    # -------------------------------------------------------------------------------- blobs
    @asynccontextmanager
    async def blob(self, digest: str, offset: int = 0) -> AsyncIterator[httpx.Response]:
        """Stream a blob from ``offset`` (a Range request): the response is 206 when the registry continued
        there, 200 when it sends the whole blob again. Transport errors propagate as httpx errors, so the
        caller can resume."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        req = self.http.build_request("GET", self.url(f"blobs/{digest}"), headers=headers)
        resp = await self.http.send(req, stream=True)
        try:
            if resp.status_code not in (200, 206, 416):
                await resp.aread()
                self.check(resp, f"downloading blob {digest}")
            yield resp
        finally:
            await resp.aclose()

    async def blob_exists(self, digest: str) -> bool:
        resp = await self._request("HEAD", self.url(f"blobs/{digest}"), "checking a blob")
        if resp.status_code == 404:
            return False
        self.check(resp, f"checking blob {digest}")
        return True

    async def start_upload(self, mount: str | None = None, mount_from: str | None = None) -> tuple[bool, str]:
        """``POST blobs/uploads/``; with ``mount``/``mount_from`` ask for a cross-repository mount first.
        Returns (mounted, upload location)."""
        params = {"mount": mount, "from": mount_from} if mount and mount_from else None
        resp = await self._request("POST", self.url("blobs/uploads/"), "starting an upload", params=params)
        self.check(resp, "starting a blob upload", ok=(201, 202))
        location = resp.headers.get("Location", "")
        return resp.status_code == 201, str(resp.url.join(location)) if location else ""

    async def upload(
        self,
        location: str,
        digest: str,
        size: int,
        chunks: AsyncIterator[bytes],
        chunk_size: int | None,
    ) -> None:
        """Upload a blob: one PUT (``chunk_size`` None) or PATCHes of ``chunk_size`` then a PUT."""
        url = httpx.URL(location)
        if chunk_size is None:
            resp = await self._request(
                "PUT",
                url.copy_merge_params({"digest": digest}),
                "uploading a blob",
                content=chunks,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
            self.check(resp, f"uploading blob {digest}", ok=(201,))
            return
        start = 0
        async for chunk in chunks:
            end = start + len(chunk) - 1
            resp = await self._request(
                "PATCH",
                url,
                "uploading a blob chunk",
                content=chunk,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{start}-{end}",
                    "Content-Length": str(len(chunk)),
                },
            )
            self.check(resp, f"uploading a chunk of blob {digest}", ok=(202,))
            url = resp.url.join(resp.headers.get("Location", str(url)))
            start = end + 1
        resp = await self._request(
            "PUT",
            url.copy_merge_params({"digest": digest}),
            "finishing a blob upload",
            headers={"Content-Length": "0"},
        )
        self.check(resp, f"finishing the upload of blob {digest}", ok=(201,))


def registry_error_for(exc: BaseException, client: RegistryClient) -> FaasdError:
    """A transport error met mid-transfer, as the RegistryError the user sees."""
    if isinstance(exc, FaasdError):
        return exc
    return client.unreachable(exc)
