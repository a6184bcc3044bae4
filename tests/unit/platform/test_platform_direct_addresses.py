"""DirectAddresses bookkeeping with a test double for ``lo``: pool checks, allocation, reconciliation."""

from __future__ import annotations

from pathlib import Path

import pytest

from faasd.errors import InvalidInputError
from faasd.platform.addresses import DirectAddresses, eligible, parse_pool
from faasd.state import Database, Function, FunctionAddress


class FakeLo:
    def __init__(self, present: set[str] | None = None, labelled: set[str] | None = None) -> None:
        self.labelled = set(labelled or ())
        self.other = set(present or ())

    def add(self, address: str) -> bool:
        new = address not in self.labelled
        self.labelled.add(address)
        return new

    def remove(self, address: str) -> bool:
        had = address in self.labelled
        self.labelled.discard(address)
        return had

    def list_labelled(self) -> set[str]:
        return set(self.labelled)

    def list_all(self) -> set[str]:
        return self.labelled | self.other | {"127.0.0.1"}


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(f"sqlite:///{tmp_path / 'x.db'}")
    d.create_all()
    return d


def fn(name: str, mode: str = "cached", runtime: str = "python") -> Function:
    return Function(name=name, image="img", mode=mode, runtime=runtime)


@pytest.mark.parametrize("pool", ["10.0.0.0/8", "192.168.1.0/24", "126.255.255.0/24", "0.0.0.0/0", "x"])
def test_pools_outside_loopback_are_refused(pool: str) -> None:
    with pytest.raises(InvalidInputError, match="FAASD_DIRECT_POOL"):
        parse_pool(pool)


def test_eligibility() -> None:
    assert eligible(fn("a")) and eligible(fn("b", runtime="node")) and eligible(fn("d", runtime="http"))
    assert not eligible(fn("c", runtime="exec"))
    assert not eligible(fn("e", mode="ephemeral")) and not eligible(fn("f", mode="checkpointed"))


def test_allocation_skips_addresses_in_use_and_persists(db: Database) -> None:
    lo = FakeLo(present={"127.88.0.1"})  # something else already uses .1
    svc = DirectAddresses(db, "127.88.0.0/29", 80, lo=lo)
    assert svc._allocate("a") == "127.88.0.2"
    with db.session() as s:
        assert {r.function: r.address for r in s.query(FunctionAddress)} == {"a": "127.88.0.2"}
    # a new service (daemon restart) knows the row
    again = DirectAddresses(db, "127.88.0.0/29", 80, lo=lo)
    assert again.address_of("a") == "127.88.0.2"
    assert again.url_of("a") == "http://127.88.0.2/"
    assert DirectAddresses(db, "127.88.0.0/29", 8080, lo=lo).url_of("a") == "http://127.88.0.2:8080/"


async def test_reconcile_drops_rows_of_gone_functions_and_unowned_addresses(db: Database) -> None:
    lo = FakeLo(labelled={"127.88.0.2", "127.88.0.5", "127.99.0.1"})  # .5: stale; 127.99: not our pool
    with db.session() as s:
        s.add(FunctionAddress(function="kept", address="127.88.0.2"))
        s.add(FunctionAddress(function="gone", address="127.88.0.3"))
        s.add(FunctionAddress(function="now-exec", address="127.88.0.4"))
    lo.labelled |= {"127.88.0.3", "127.88.0.4"}
    svc = DirectAddresses(db, "127.88.0.0/29", 80, lo=lo)
    stale = await svc.reconcile([fn("kept"), fn("now-exec", runtime="exec")])
    assert stale == ["127.88.0.5"]
    assert lo.labelled == {"127.88.0.2", "127.99.0.1"}
    assert svc.address_of("kept") == "127.88.0.2" and svc.address_of("gone") is None
    with db.session() as s:
        assert {r.function for r in s.query(FunctionAddress)} == {"kept"}
    await svc.release("kept")
    assert lo.labelled == {"127.99.0.1"} and svc.address_of("kept") is None
