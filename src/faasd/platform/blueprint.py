"""The seed platform's zip deploy: a zip holding an executable ``bootstrap`` becomes an ``exec`` function.

``PUT /api/blueprint/functions/{id}`` sends the zip as the body and the function's settings in the header
``X-Blueprint-Config`` (base64 JSON ``{memory_mb, timeout_secs, max_concurrency, env_vars}``). The zip is
checked (no absolute or ``..`` names, no links, bounded size and entries), turned into a tar.gz and
deployed like a source deploy (the files land in ``/function``); every invocation runs
``/function/bootstrap`` with the payload on stdin (OpenFaaS classic-watchdog semantics: stdout is the
result). The function is an ordinary faasd function named ``{id}`` with the label ``faasd.blueprint``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import stat
import tarfile
import time
import zipfile
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from faasd.errors import InvalidInputError
from faasd.platform.env import EnvVarsOrPairs

BLUEPRINT_LABEL = "faasd.blueprint"
BOOTSTRAP = "bootstrap"
MAX_ZIP_ENTRIES = 10_000
MAX_UNZIPPED_BYTES = 256 * 1024 * 1024


class BlueprintConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    memory_mb: int = Field(default=256, ge=16, le=65536)
    timeout_secs: float = Field(default=30.0, gt=0, le=3600)
    max_concurrency: int = Field(default=4, ge=1, le=100)
    env_vars: EnvVarsOrPairs = Field(default_factory=dict)


def parse_config(header: str | None) -> BlueprintConfig:
    """The ``X-Blueprint-Config`` header (base64 of a JSON object); defaults when absent."""
    if not header:
        return BlueprintConfig()
    try:
        doc = json.loads(base64.b64decode(header, validate=True))
    except (binascii.Error, ValueError):
        raise InvalidInputError("X-Blueprint-Config must be base64 of a JSON object") from None
    if not isinstance(doc, dict):
        raise InvalidInputError("X-Blueprint-Config must be base64 of a JSON object")
    try:
        return BlueprintConfig.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "config"
        raise InvalidInputError(f"X-Blueprint-Config: {where}: {first.get('msg')}") from None


def zip_to_targz(data: bytes) -> bytes:
    """A checked zip -> the gzip'ed tar a source deploy takes. ``bootstrap`` must be there; it is made
    executable (zips made on Windows lose the mode bits)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError):
        raise InvalidInputError(
            "the body is not a zip archive; send a zip holding an executable 'bootstrap'"
        ) from None
    infos = zf.infolist()
    if len(infos) > MAX_ZIP_ENTRIES:
        raise InvalidInputError(f"the zip has more than {MAX_ZIP_ENTRIES} entries")
    if sum(i.file_size for i in infos) > MAX_UNZIPPED_BYTES:
        raise InvalidInputError(f"the zip unpacks to more than {MAX_UNZIPPED_BYTES} bytes")
    names = set()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for info in infos:
            name = info.filename
            parts = [p for p in name.split("/") if p not in ("", ".")]
            if name.startswith("/") or ".." in parts or "\\" in name:
                raise InvalidInputError(f"zip entry {name!r} escapes the function directory")
            if not parts:
                continue
            mode = (info.external_attr >> 16) & 0xFFFF
            if stat.S_ISLNK(mode):
                raise InvalidInputError(f"zip entry {name!r} is a symlink; links are not allowed")
            rel = "/".join(parts)
            ti = tarfile.TarInfo(rel)
            ti.mtime = int(time.time())
            if info.is_dir():
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                tar.addfile(ti)
                continue
            content = zf.read(info)
            ti.size = len(content)
            ti.mode = 0o755 if rel == BOOTSTRAP or mode & 0o111 else 0o644
            tar.addfile(ti, io.BytesIO(content))
            names.add(rel)
    if BOOTSTRAP not in names:
        raise InvalidInputError(
            "the zip has no 'bootstrap' at its top level; it is what every invocation runs"
        )
    return out.getvalue()


def payload_bytes(args: Any) -> bytes:
    """``args`` of an invoke on stdin: text as is, a list of byte values as bytes, anything else as JSON."""
    if isinstance(args, str):
        return args.encode()
    if (
        isinstance(args, list)
        and args
        and all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in args)
    ):
        return bytes(args)
    return json.dumps(args).encode()
