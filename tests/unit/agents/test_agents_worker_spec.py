"""WorkerSpec validation and the SandboxSpec it produces for each mode (no sandbox is started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from faasd.errors import InvalidInputError
from faasd.runtime import BindMount, NetworkSpec, SandboxSpec
from faasd.runtime.agent_files import AGENT_SOCKET_IN_CONTAINER
from faasd.runtime.workers import InvokeRequest, WorkerSpec
from faasd.runtime.workers.exec_mode import cgi_env

pytestmark = pytest.mark.unit

LOWERS = [Path("/nonexistent/base"), Path("/nonexistent/code")]


def _targets(spec: SandboxSpec) -> list[str]:
    return [m.target for m in spec.mounts]


def test_python_spec_runs_the_agent() -> None:
    spec = WorkerSpec(
        function="My Func!", lowers=LOWERS, handler="main:run", env={"A": "1"}, fork_per_request=True
    )
    spec.validate()
    sid = spec.new_sandbox_id()
    assert sid.startswith("fd-my-func-")
    sb = spec.sandbox_spec(sid)
    assert sb.id == sid
    assert sb.args is not None and sb.args[:2] == ["python3", "/faasd/agent/python/agent.py"]
    assert sb.args[sb.args.index("--socket") + 1] == AGENT_SOCKET_IN_CONTAINER
    assert sb.args[sb.args.index("--handler") + 1] == "main:run"
    assert sb.args[sb.args.index("--function-name") + 1] == "My Func!"
    assert "--fork" in sb.args
    assert "/faasd/agent" in _targets(sb)
    assert dict(sb.env) == {"A": "1"}
    assert sb.lowers == LOWERS
    from faasd.runtime.models import SANDBOX_ID_RE

    assert SANDBOX_ID_RE.match(sid)


def test_default_handlers_and_interpreter() -> None:
    py = WorkerSpec(function="f", lowers=LOWERS, interpreter="/usr/local/bin/python3.12").sandbox_spec("fd-x")
    assert py.args is not None and py.args[0] == "/usr/local/bin/python3.12"
    assert py.args[py.args.index("--handler") + 1] == "handler:handle"
    node = WorkerSpec(function="f", mode="node", lowers=LOWERS).sandbox_spec("fd-x")
    assert node.args is not None and node.args[:5] == [
        "/faasd/bin/faasd-init",
        "--main",
        "--",
        "node",
        "/faasd/agent/node/agent.js",
    ]
    assert node.args[node.args.index("--handler") + 1] == "handler.js"


def test_exec_spec_runs_faasd_init() -> None:
    spec = WorkerSpec(function="f", mode="exec", lowers=LOWERS, command=["/bin/app", "-x"])
    spec.validate()
    init = BindMount(Path("/nonexistent/bin"), "/faasd/bin")
    sb = spec.sandbox_spec("fd-x", [init])
    assert sb.args == ["/faasd/bin/faasd-init"]
    assert "/faasd/bin" in _targets(sb) and "/faasd/agent" not in _targets(sb)


def test_http_spec_uses_server_command_and_netns() -> None:
    spec = WorkerSpec(function="f", mode="http", lowers=LOWERS, command=["python3", "app.py"], port=9000)
    sb = spec.sandbox_spec("fd-x")
    assert sb.args == ["python3", "app.py"]
    assert sb.network.mode == "loopback-proxy" and sb.network.ports == (9000,)
    egress = WorkerSpec(function="f", mode="http", lowers=LOWERS, network=NetworkSpec(mode="egress"))
    assert egress.sandbox_spec("fd-x").network.mode == "egress"
    assert egress.sandbox_spec("fd-x").args is None  # the image's entrypoint + cmd


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"mode": "ruby"}, "unknown worker mode"),
        ({"function": ""}, "needs a function name"),
        ({"mode": "node", "fork_per_request": True}, "only available for python"),
        ({"mode": "http", "port": 0}, "port must be"),
        ({"mode": "exec"}, "needs a command"),
        ({"ready_timeout_s": 0}, "ready_timeout_s"),
    ],
)
def test_invalid_specs(kw: dict[str, object], message: str) -> None:
    kw.setdefault("function", "f")
    spec = WorkerSpec(lowers=LOWERS, **kw)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=message):
        spec.validate()


def test_watchdog_style_request_env() -> None:
    env = cgi_env(
        InvokeRequest(
            method="PUT",
            path="/a/b",
            query="x=1",
            headers={"content-type": "text/plain", "X-Request-Id": "r1"},
        )
    )
    assert env == {
        "Http_Method": "PUT",
        "Http_Path": "/a/b",
        "Http_Query": "x=1",
        "Http_Content_Type": "text/plain",
        "Http_X_Request_Id": "r1",
    }
