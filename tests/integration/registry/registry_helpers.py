"""A real Debian ``docker-registry`` on a loopback port, filled with ``skopeo copy``; a cutting proxy."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from faasd.images import testbuild as tb
from faasd.images.testbuild import Entry, F, L

USER, PASSWORD = "alice", "s3cret-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Registry:
    """``docker-registry`` with filesystem storage in a temp dir; stopped and removed by ``stop``.

    ``auth``: False (open), True (htpasswd: basic auth) or "token" (bearer tokens from a TokenServer).
    """

    def __init__(self, auth: bool | str = False) -> None:
        self.auth = auth
        self.token_server: TokenServer | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="faasd-test-registry-"))
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Registry:
        for tool in ("docker-registry", "skopeo", "htpasswd", "openssl", "busybox"):
            if shutil.which(tool) is None:
                shutil.rmtree(self.dir, ignore_errors=True)
                raise AssertionError(f"{tool} is not installed: run scripts/setup-system.sh")
        storage = self.dir / "storage"
        storage.mkdir()
        cfg = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {storage}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
        ]
        if self.auth == "token":
            self.token_server = TokenServer(self.dir).start()
            cfg += [
                "auth:",
                "  token:",
                f"    realm: {self.token_server.realm}",
                f"    service: {TokenServer.SERVICE}",
                f"    issuer: {TokenServer.ISSUER}",
                f"    rootcertbundle: {self.token_server.cert}",
            ]
        elif self.auth:
            htpasswd = self.dir / "htpasswd"
            subprocess.run(
                ["htpasswd", "-Bbc", str(htpasswd), USER, PASSWORD], check=True, capture_output=True
            )
            cfg += ["auth:", "  htpasswd:", "    realm: faasd-test", f"    path: {htpasswd}"]
        (self.dir / "config.yml").write_text("\n".join(cfg) + "\n")
        log = (self.dir / "registry.log").open("ab")
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(self.dir / "config.yml")], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"docker-registry exited: {(self.dir / 'registry.log').read_text()}")
            try:
                if httpx.get(f"http://{self.host}/v2/", timeout=1).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("docker-registry did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.token_server is not None:
            self.token_server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def blob_file(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.dir / "storage/docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def skopeo_copy(self, src: str, repo_tag: str, *extra: str) -> None:
        creds = ["--dest-creds", f"{USER}:{PASSWORD}"] if self.auth else []
        proc = subprocess.run(
            [
                "skopeo",
                "--insecure-policy",
                "copy",
                "--dest-tls-verify=false",
                *creds,
                *extra,
                src,
                f"docker://{self.host}/{repo_tag}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, f"skopeo copy {src} failed: {proc.stderr}"

    def manifest(self, repo: str, ref: str, accept: str) -> tuple[bytes, str]:
        auth = (USER, PASSWORD) if self.auth else None
        r = httpx.get(f"http://{self.host}/v2/{repo}/manifests/{ref}", headers={"Accept": accept}, auth=auth)
        r.raise_for_status()
        return r.content, r.headers["Content-Type"]


class TokenServer:
    """A docker token-auth server (the protocol Docker Hub speaks): ``GET /token?service=&scope=`` with basic
    credentials answers a JWT (RS256, signed with ``openssl``, its certificate in ``x5c``) granting the
    requested scope. Records the scopes it was asked for."""

    SERVICE = "faasd-test-registry"
    ISSUER = "faasd-test-issuer"

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.key = directory / "token.key"
        self.cert = directory / "token.crt"
        self.port = free_port()
        self.scopes: list[str] = []
        self.refused = 0
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def start(self) -> TokenServer:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(self.key),
                "-out",
                str(self.cert),
                "-days",
                "1",
                "-subj",
                "/CN=faasd-test-token",
            ],
            check=True,
            capture_output=True,
        )
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True, capture_output=True
        ).stdout
        x5c = base64.b64encode(der).decode()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    outer.refused += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                access = []
                for scope in query.get("scope", []):
                    outer.scopes.append(scope)
                    kind, _, rest = scope.partition(":")
                    name, _, actions = rest.rpartition(":")
                    access.append({"type": kind, "name": name, "actions": actions.split(",")})
                now = int(time.time())
                claims = {
                    "iss": TokenServer.ISSUER,
                    "sub": USER,
                    "aud": TokenServer.SERVICE,
                    "exp": now + 300,
                    "nbf": now - 10,
                    "iat": now,
                    "jti": str(now) + str(len(outer.scopes)),
                    "access": access,
                }
                body = json.dumps({"token": outer.sign({"typ": "JWT", "alg": "RS256", "x5c": [x5c]}, claims)})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def sign(self, header: dict[str, object], claims: dict[str, object]) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing_input}.{b64(sig)}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def busybox_entries(marker: str) -> list[Entry]:
    """A runnable layer: static busybox as /bin/sh, /bin/cat, /bin/echo, plus a marker file."""
    data = Path("/usr/bin/busybox").read_bytes()
    return [
        tb.D("bin"),
        F("bin/busybox", data, mode=0o755),
        L("bin/sh", "busybox"),
        L("bin/cat", "busybox"),
        L("bin/echo", "busybox"),
        L("bin/ls", "busybox"),
        tb.D("etc"),
        F("etc/marker", marker),
        tb.D("tmp", mode=0o1777),
    ]


def busybox_image(marker: str, extra: list[Entry] | None = None) -> tb.BuiltImage:
    """Two uncompressed layers (skopeo compresses them when it pushes): busybox, then ``extra``."""
    return tb.build_image(
        [busybox_entries(marker), extra or [F("etc/second", "layer two\n")]],
        compression="none",
        config={"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
    )


def docker_archive(img: tb.BuiltImage, path: Path, tag: str = "test/busybox:latest") -> Path:
    return tb.write_docker_archive(img, path, tags=[tag])


@dataclass
class CuttingProxy:
    """A loopback HTTP proxy to ``upstream`` that cuts the first response of each blob GET after
    ``cut_after`` bytes of body (the server closes the connection mid-blob). Records request lines and
    Range headers."""

    upstream: str
    cut_after: int
    cuts_per_blob: int = 1
    port: int = field(default_factory=free_port)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    _cut: dict[str, int] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.base_events.Server | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> CuttingProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def main() -> None:
                self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
                ready.set()
                async with self._server:
                    await self._server.serve_forever()

            try:
                loop.run_until_complete(main())
            except asyncio.CancelledError:
                pass
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
            for task in asyncio.all_tasks(self._loop):
                self._loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with httpx.AsyncClient(base_url=f"http://{self.upstream}") as up:
                while True:
                    line = await reader.readline()
                    if not line:
                        return
                    method, path, _ = line.decode().split(" ", 2)
                    headers: dict[str, str] = {}
                    while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                        k, _, v = h.decode().partition(":")
                        headers[k.strip().lower()] = v.strip()
                    body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                    self.requests.append((f"{method} {path}", headers.get("range")))
                    fwd = {
                        k: v for k, v in headers.items() if k not in ("host", "connection", "content-length")
                    }
                    resp = await up.request(method, path, headers=fwd, content=body)
                    data = resp.content
                    is_blob = method == "GET" and "/blobs/sha256:" in path and resp.status_code in (200, 206)
                    cut = (
                        is_blob and self._cut.get(path, 0) < self.cuts_per_blob and len(data) > self.cut_after
                    )
                    out = [f"HTTP/1.1 {resp.status_code} {resp.reason_phrase}"]
                    for k, v in resp.headers.items():
                        if k.lower() not in (
                            "content-length",
                            "transfer-encoding",
                            "connection",
                            "content-encoding",
                        ):
                            out.append(f"{k}: {v}")
                    out.append(f"Content-Length: {len(data)}")
                    writer.write(("\r\n".join(out) + "\r\n\r\n").encode())
                    if cut:
                        self._cut[path] = self._cut.get(path, 0) + 1
                        writer.write(data[: self.cut_after])
                        await writer.drain()
                        return  # close mid-body
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()


def sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def docker_config(path: Path, host: str, user: str, password: str) -> Path:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return path
