"""The persistent-instance, image and job operations of the SDK's clients, as mixins:
:class:`InstanceOps` of :class:`~faasd.sdk.client.Client` and :class:`AsyncInstanceOps` of
:class:`~faasd.sdk.async_client.AsyncClient` (each a one-line sender of an operation of ``_api``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faasd.sdk import _api
from faasd.sdk import models as sm
from faasd.sdk._api import Call
from faasd.sdk._base import T


class InstanceOps:
    """Persistent instances, images and jobs (blocking); the client provides ``_call``."""

    def _call(self, call: Call[T]) -> T:
        raise NotImplementedError

    def start_instance(
        self,
        image: str | None = None,
        *,
        snapshot_id: str | None = None,
        name: str | None = None,
        cpu_cores: float = 1.0,
        memory_mb: int = 512,
        disk_gb: float = 1.0,
        ttl_s: float | None = None,
        env: Mapping[str, str] | None = None,
        isolation: str | None = None,
        pids: int | None = None,
    ) -> sm.Instance:
        """Start a persistent instance from an image (default faasd/python:latest) or a snapshot."""
        return self._call(
            _api.start_instance(
                image=image,
                snapshot_id=snapshot_id,
                name=name,
                cpu_cores=cpu_cores,
                memory_mb=memory_mb,
                disk_gb=disk_gb,
                ttl_s=ttl_s,
                env=dict(env or {}),
                isolation=isolation,
                pids=pids,
            )
        )

    def list_instances(self) -> list[sm.Instance]:
        return self._call(_api.list_instances())

    def get_instance(self, instance_id: str) -> sm.Instance:
        return self._call(_api.get_instance(instance_id))

    def pull_image(self, ref: str) -> sm.Image:
        """Have the daemon pull ``ref`` from its registry (``alpine`` is docker.io/library/alpine:latest)."""
        return self._call(_api.pull_image(ref))

    def push_image(self, ref: str, *, source: str | None = None) -> sm.PushResult:
        """Have the daemon push its image ``source`` (default: the one named ``ref``) to ``ref``."""
        return self._call(_api.push_image(ref, source))

    def delete_instance(self, instance_id: str) -> None:
        self._call(_api.delete_instance(instance_id))

    def instance_action(self, instance_id: str, action: str) -> sm.Instance:
        """``action``: start | stop | pause | resume."""
        return self._call(_api.instance_action(instance_id, action))

    def exec_instance(
        self,
        instance_id: str,
        command: list[str] | str,
        *,
        stdin: bytes | str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout_s: float = 60.0,
    ) -> sm.InstanceExecResult:
        return self._call(
            _api.exec_instance(instance_id, command, stdin=stdin, env=env, cwd=cwd, timeout_s=timeout_s)
        )

    def upload_to_instance(
        self, instance_id: str, target_path: str, files: Mapping[str, bytes]
    ) -> sm.UploadResult:
        return self._call(_api.upload_instance_files(instance_id, target_path, files))

    def upload_tar_to_instance(self, instance_id: str, target_path: str, archive: bytes) -> sm.UploadResult:
        return self._call(_api.upload_instance_tar(instance_id, target_path, archive))

    def download_from_instance(self, instance_id: str, path: str) -> bytes:
        """A tar archive of ``path`` inside the instance."""
        return self._call(_api.download_instance(instance_id, path))

    def expose_port(
        self, instance_id: str, internal_port: int, *, protocol: str = "http", subdomain: str | None = None
    ) -> sm.InstancePort:
        return self._call(_api.expose_instance_port(instance_id, internal_port, protocol, subdomain))

    def run_job(self, type: int | str, args: Mapping[str, Any] | None = None) -> sm.Job:
        return self._call(_api.run_job(type, args or {}))

    def get_job(self, job_id: str) -> sm.Job:
        return self._call(_api.get_job(job_id))


class AsyncInstanceOps:
    """Persistent instances, images and jobs (awaitable); the client provides ``_call``."""

    async def _call(self, call: Call[T]) -> T:
        raise NotImplementedError

    async def start_instance(
        self,
        image: str | None = None,
        *,
        snapshot_id: str | None = None,
        name: str | None = None,
        cpu_cores: float = 1.0,
        memory_mb: int = 512,
        disk_gb: float = 1.0,
        ttl_s: float | None = None,
        env: Mapping[str, str] | None = None,
        isolation: str | None = None,
        pids: int | None = None,
    ) -> sm.Instance:
        """Start a persistent instance from an image (default faasd/python:latest) or a snapshot."""
        return await self._call(
            _api.start_instance(
                image=image,
                snapshot_id=snapshot_id,
                name=name,
                cpu_cores=cpu_cores,
                memory_mb=memory_mb,
                disk_gb=disk_gb,
                ttl_s=ttl_s,
                env=dict(env or {}),
                isolation=isolation,
                pids=pids,
            )
        )

    async def list_instances(self) -> list[sm.Instance]:
        return await self._call(_api.list_instances())

    async def get_instance(self, instance_id: str) -> sm.Instance:
        return await self._call(_api.get_instance(instance_id))

    async def pull_image(self, ref: str) -> sm.Image:
        """Have the daemon pull ``ref`` from its registry (see ``Client.pull_image``)."""
        return await self._call(_api.pull_image(ref))

    async def push_image(self, ref: str, *, source: str | None = None) -> sm.PushResult:
        """Have the daemon push its image ``source`` (default: the one named ``ref``) to ``ref``."""
        return await self._call(_api.push_image(ref, source))

    async def delete_instance(self, instance_id: str) -> None:
        await self._call(_api.delete_instance(instance_id))

    async def instance_action(self, instance_id: str, action: str) -> sm.Instance:
        """``action``: start | stop | pause | resume."""
        return await self._call(_api.instance_action(instance_id, action))

    async def exec_instance(
        self,
        instance_id: str,
        command: list[str] | str,
        *,
        stdin: bytes | str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout_s: float = 60.0,
    ) -> sm.InstanceExecResult:
        return await self._call(
            _api.exec_instance(instance_id, command, stdin=stdin, env=env, cwd=cwd, timeout_s=timeout_s)
        )

    async def upload_to_instance(
        self, instance_id: str, target_path: str, files: Mapping[str, bytes]
    ) -> sm.UploadResult:
        return await self._call(_api.upload_instance_files(instance_id, target_path, files))

    async def upload_tar_to_instance(
        self, instance_id: str, target_path: str, archive: bytes
    ) -> sm.UploadResult:
        return await self._call(_api.upload_instance_tar(instance_id, target_path, archive))

    async def download_from_instance(self, instance_id: str, path: str) -> bytes:
        """A tar archive of ``path`` inside the instance."""
        return await self._call(_api.download_instance(instance_id, path))

    async def expose_port(
        self, instance_id: str, internal_port: int, *, protocol: str = "http", subdomain: str | None = None
    ) -> sm.InstancePort:
        return await self._call(_api.expose_instance_port(instance_id, internal_port, protocol, subdomain))

    async def run_job(self, type: int | str, args: Mapping[str, Any] | None = None) -> sm.Job:
        return await self._call(_api.run_job(type, args or {}))

    async def get_job(self, job_id: str) -> sm.Job:
        return await self._call(_api.get_job(job_id))
