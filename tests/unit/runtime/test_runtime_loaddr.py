"""Direct addresses on ``lo`` through iproute2's ``ip``: its answers read right, races and failures told
apart, and the daemon's imports stay without pyroute2 (10 MB of the idle daemon's memory)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from faasd.errors import InvalidInputError, RuntimeFailure
from faasd.runtime import loaddr

pytestmark = pytest.mark.unit


def _show(*addrs: tuple[str, int, str]) -> str:
    info = [
        {"family": "inet", "local": a, "prefixlen": p, "scope": "host", "label": lbl} for a, p, lbl in addrs
    ]
    return json.dumps([{"ifindex": 1, "ifname": "lo", "addr_info": info}])


class FakeIp:
    """``ip``: the address list it shows, and the answer ``addr add``/``addr del`` give (after which the list
    may change, as another process's work would)."""

    def __init__(self, shown: list[tuple[str, int, str]], rc: int = 0, stderr: str = "") -> None:
        self.shown, self.rc, self.stderr = shown, rc, stderr
        self.after: list[tuple[str, int, str]] | None = None
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        if args[:3] == ("-4", "-j", "addr"):
            return subprocess.CompletedProcess(args, 0, _show(*self.shown), "")
        if self.after is not None:
            self.shown = self.after
        return subprocess.CompletedProcess(args, self.rc, "", self.stderr)


LO = ("127.0.0.1", 8, "lo")


def test_lists_read_ip_json(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeIp([LO, ("127.9.0.2", 32, "lo:faas"), ("127.9.0.3", 32, "lo:other")])
    monkeypatch.setattr(loaddr, "_ip", fake)
    assert loaddr.list_labelled() == {"127.9.0.2"}
    assert loaddr.list_all() == {"127.0.0.1", "127.9.0.2", "127.9.0.3"}


def test_add_asks_for_a_labelled_host_scoped_32(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeIp([LO])
    monkeypatch.setattr(loaddr, "_ip", fake)
    assert loaddr.add("127.9.0.2") is True
    assert fake.calls[-1] == ("addr", "add", "127.9.0.2/32", "dev", "lo", "label", "lo:faas", "scope", "host")


def test_add_of_an_address_already_there_is_false(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeIp([LO, ("127.9.0.2", 32, "lo:faas")], rc=2, stderr="Error: ipv4: Address already assigned.")
    monkeypatch.setattr(loaddr, "_ip", fake)
    assert loaddr.add("127.9.0.2") is False


def test_a_failed_add_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeIp([LO], rc=2, stderr="RTNETLINK answers: Operation not permitted")
    monkeypatch.setattr(loaddr, "_ip", fake)
    with pytest.raises(
        RuntimeFailure, match=r"cannot add 127\.9\.0\.2/32 to lo: RTNETLINK answers: Operation not"
    ):
        loaddr.add("127.9.0.2")


def test_remove_touches_only_labelled_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeIp([LO, ("127.9.0.3", 32, "lo:other")])
    monkeypatch.setattr(loaddr, "_ip", fake)
    assert loaddr.remove("127.9.0.3") is False
    assert not any(c[:2] == ("addr", "del") for c in fake.calls)


def test_remove_raced_by_another_removal_is_false_and_a_real_failure_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeIp([LO, ("127.9.0.2", 32, "lo:faas")], rc=2, stderr="Error: ipv4: Address not found.")
    fake.after = [LO]  # someone else removed it first
    monkeypatch.setattr(loaddr, "_ip", fake)
    assert loaddr.remove("127.9.0.2") is False
    stuck = FakeIp(
        [LO, ("127.9.0.2", 32, "lo:faas")], rc=2, stderr="RTNETLINK answers: Operation not permitted"
    )
    monkeypatch.setattr(loaddr, "_ip", stuck)
    with pytest.raises(RuntimeFailure, match=r"cannot remove 127\.9\.0\.2/32 from lo"):
        loaddr.remove("127.9.0.2")


@pytest.mark.parametrize("address", ["10.0.0.1", "127.0.0.1", "not-an-ip"])
def test_only_loopback_addresses_are_touched(address: str) -> None:
    with pytest.raises(InvalidInputError):
        loaddr.add(address)
    with pytest.raises(InvalidInputError):
        loaddr.remove(address)


def test_without_iproute2_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeFailure, match="install iproute2"):
        loaddr.list_all()


def test_the_daemon_and_its_addresses_do_not_import_pyroute2() -> None:
    code = (
        "import sys\n"
        "import faasd.daemon, faasd.api.app, faasd.platform.addresses\n"
        "from faasd.runtime import loaddr\n"
        "loaddr.list_all()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyroute2'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
