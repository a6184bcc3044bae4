"""Fixtures for worker integration tests: a sandbox manager, code layers, runtime rootfs dirs, leak checks."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from faasd.config import Settings
from faasd.runtime import SandboxManager
from faasd.runtime.workers import Worker, WorkerSpec, start_worker
from faasd.testing.leaks import sandbox_leaks

DEV_ROOTFS_DIR = Path("/var/lib/faasd-dev")


@pytest.fixture
def code_layer(tmp_path: Path) -> Callable[..., Path]:
    """``code_layer({"function/handler.py": "..."})`` -> a lower layer dir holding those files."""
    counter = [0]

    def make(files: dict[str, str | bytes], mode: int = 0o644) -> Path:
        counter[0] += 1
        root = tmp_path / f"layer{counter[0]}"
        for name, content in files.items():
            p = root / name
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                p.write_text(textwrap.dedent(content))
            p.chmod(mode)
        return root

    return make


@pytest.fixture
async def workers(manager: SandboxManager, settings: Settings) -> AsyncIterator[Callable[..., object]]:
    """``await workers(spec)`` starts a worker, closed (and checked for leaks) after the test."""
    started: list[Worker] = []

    async def start(spec: WorkerSpec) -> Worker:
        w = await start_worker(manager, spec)
        started.append(w)
        return w

    yield start
    for w in started:
        await w.close()
        assert sandbox_leaks(settings, w.id) == []


@pytest.fixture(scope="session")
def node_rootfs() -> Path:
    """Debian bookworm minbase + nodejs (Node 18), built once with debootstrap (~60 s)."""
    target = DEV_ROOTFS_DIR / "rootfs-node"
    if not (target / "usr/bin/node").exists():
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        DEV_ROOTFS_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=nodejs",
                "bookworm",
                str(tmp),
                "http://deb.debian.org/debian",
            ],
            check=True,
            capture_output=True,
        )
        tmp.rename(target)
    return target


@pytest.fixture(scope="session")
def static_binaries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Static C (and, when rustc exists, Rust) programs compiled for exec-mode tests."""
    out = tmp_path_factory.mktemp("static-bins")
    src = out / "hello.c"
    src.write_text(
        textwrap.dedent(r"""
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        #include <ctype.h>
        #include <unistd.h>
        int main(int argc, char **argv) {
            const char *mode = argc > 1 ? argv[1] : "upper";
            if (strcmp(mode, "sleep") == 0) { sleep(60); return 0; }
            if (strcmp(mode, "fail") == 0) { fprintf(stderr, "something went wrong\n"); return 3; }
            if (strcmp(mode, "uid") == 0) { printf("%d:%d", (int)getuid(), (int)getgid()); return 0; }
            const char *greet = getenv("GREETING");
            const char *method = getenv("Http_Method");
            printf("%s|%s|", greet ? greet : "-", method ? method : "-");
            int c;
            while ((c = getchar()) != EOF) putchar(toupper(c));
            fprintf(stderr, "done\n");
            return 0;
        }
    """)
    )
    bins: dict[str, Path] = {}
    subprocess.run(["gcc", "-static", "-Os", "-o", str(out / "hello-c"), str(src)], check=True)
    bins["c"] = out / "hello-c"
    rustc = shutil.which("rustc") or (
        str(Path.home() / ".cargo/bin/rustc") if (Path.home() / ".cargo/bin/rustc").exists() else None
    )
    if rustc is not None:
        rs = out / "hello.rs"
        rs.write_text(
            textwrap.dedent("""
            use std::io::{Read, Write};
            fn main() {
                let mut input = String::new();
                std::io::stdin().read_to_string(&mut input).unwrap();
                let greet = std::env::var("GREETING").unwrap_or_else(|_| "-".into());
                let out = format!("rust:{}:{}", greet, input.chars().rev().collect::<String>());
                std::io::stdout().write_all(out.as_bytes()).unwrap();
            }
        """)
        )
        res = subprocess.run(
            [rustc, "-O", "-C", "target-feature=+crt-static", "-o", str(out / "hello-rs"), str(rs)],
            capture_output=True,
            check=False,
        )
        if res.returncode == 0:
            bins["rust"] = out / "hello-rs"
    yield bins


@pytest.fixture
def leaks(settings: Settings) -> Callable[[str], list[str]]:
    """``leaks(sandbox_id)`` -> what of that sandbox is still on the host (empty = clean)."""
    return partial(sandbox_leaks, settings)
