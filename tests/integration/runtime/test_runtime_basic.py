"""Running processes in real runc sandboxes: exit codes, stdio, env, cwd, user, exec, listing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from faasd.errors import ConflictError, RuntimeFailure
from faasd.runtime import SandboxManager, SandboxSpec

pytestmark = pytest.mark.integration

Spec = Callable[..., SandboxSpec]


@dataclass
class ImageCfg:
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] | None = None
    working_dir: str | None = None
    user: str | None = None


async def test_exit_code_and_stdio(
    manager: SandboxManager, make_spec: Spec, no_leaks: Callable[[], None]
) -> None:
    code = ("import sys; print('out'); print('err', file=sys.stderr); sys.stdout.write(sys.stdin.read()); "
            "sys.exit(7)")
    res = await manager.run(make_spec("python3", "-c", code), stdin=b"piped-in", timeout_s=20)
    assert res.exit_code == 7
    assert res.stdout == b"out\npiped-in"
    assert res.stderr == b"err\n"
    assert not res.oom_killed and not res.timed_out
    no_leaks()


async def test_run_answers_before_a_background_teardown(
    manager: SandboxManager, make_spec: Spec, sid: str, no_leaks: Callable[[], None]
) -> None:
    res = await manager.run(
        make_spec("python3", "-c", "print('done')"), timeout_s=20, background_teardown=True
    )
    assert res.exit_code == 0 and res.stdout == b"done\n"
    # answered with the sandbox still there: its teardown is a task of the manager's
    assert manager.get(sid) is not None
    await manager.settle()
    assert manager.get(sid) is None
    no_leaks()


async def test_a_failed_run_tears_down_before_its_error_even_in_background(
    manager: SandboxManager, make_spec: Spec, sid: str, no_leaks: Callable[[], None]
) -> None:
    with pytest.raises(RuntimeFailure):
        await manager.run(make_spec("/no/such/program"), timeout_s=20, background_teardown=True)
    assert manager.get(sid) is None  # not left to settle()
    no_leaks()


async def test_large_output_does_not_block(manager: SandboxManager, make_spec: Spec) -> None:
    res = await manager.run(
        make_spec("python3", "-c", "import sys; sys.stdout.write('x' * 3_000_000)"), timeout_s=20
    )
    assert res.exit_code == 0 and len(res.stdout) == 3_000_000


async def test_env_cwd_and_image_user(
    manager: SandboxManager, make_spec: Spec, no_leaks: Callable[[], None]
) -> None:
    code = ("import os; print(os.environ['GREETING'], os.environ['FROM_IMAGE'], os.getcwd(), os.getuid(), "
            "os.getgid())")
    spec = make_spec(
        image_config=ImageCfg(
            cmd=["python3", "-c", code],
            env=["FROM_IMAGE=img", "GREETING=x"],
            working_dir="/var",
            user="nobody",
        ),
        env={"GREETING": "hello"},
    )
    res = await manager.run(spec, timeout_s=20)
    assert res.exit_code == 0, res.stderr
    assert res.stdout.decode().split() == ["hello", "img", "/var", "65534", "65534"]
    no_leaks()


async def test_create_start_wait_exec(
    manager: SandboxManager, make_spec: Spec, no_leaks: Callable[[], None]
) -> None:
    sb = await manager.create(make_spec("sleep", "60"))
    assert sb.status == "created"
    assert (await sb.state())["status"] == "created"
    await sb.start()
    assert sb.status == "running"
    r = await sb.exec(["sh", "-c", "echo $HOSTNAME-$(id -u); cat"], stdin=b"abc", timeout=20)
    assert r.exit_code == 0
    assert r.stdout == f"{sb.id}-0\nabc".encode() or r.stdout.endswith(b"abc")
    r2 = await sb.exec(["sleep", "30"], timeout=0.5)
    assert r2.timed_out
    infos = {i.id: i for i in await manager.list()}
    assert infos[sb.id].owned and infos[sb.id].status == "running"
    await sb.kill()
    status = await sb.wait(10)
    assert status.exit_code == 137 and status.signal == 9 and not status.oom_killed
    await sb.destroy()
    await sb.destroy()  # idempotent
    assert sb.status == "destroyed"
    no_leaks()


async def test_duplicate_id_conflicts(manager: SandboxManager, make_spec: Spec) -> None:
    sb = await manager.create(make_spec("true"))
    try:
        with pytest.raises(ConflictError):
            await manager.create(make_spec("true"))
    finally:
        await sb.destroy()


async def test_io_dir_is_shared_with_the_host(manager: SandboxManager, make_spec: Spec) -> None:
    sb = await manager.create(
        make_spec("sh", "-c", "echo hi > /run/faasd-io/f; cat /faasd/agent/a"), stdin_pipe=False
    )
    try:
        await sb.start()
        st = await sb.wait(20)
        assert st.exit_code == 1  # /faasd/agent not mounted in this spec
        assert (sb.io_dir / "f").read_text() == "hi\n"
    finally:
        await sb.destroy()


async def test_large_stdin_and_output_callback(manager: SandboxManager, make_spec: Spec) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, larger than a pipe buffer
    res = await manager.run(make_spec("cat"), stdin=data, timeout_s=30)
    assert res.exit_code == 0 and res.stdout == data
    chunks: list[tuple[str, bytes]] = []
    sb = await manager.create(make_spec("sh", "-c", "echo one; echo two >&2"),
                              on_output=lambda name, b: chunks.append((name, b)))
    try:
        await sb.start()
        assert (await sb.wait(20)).exit_code == 0
        assert b"".join(b for n, b in chunks if n == "stdout") == b"one\n"
        assert b"".join(b for n, b in chunks if n == "stderr") == b"two\n"
    finally:
        await sb.destroy()
