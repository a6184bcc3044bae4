"""HTTP statuses live in the API layer only: ``faasd.api.errors.HTTP_STATUS`` maps every error code in the
tree to the status the API answers with, and the error classes below it carry codes and messages only."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import faasd
from faasd import errors as core
from faasd.api.errors import HTTP_STATUS, http_status, install_error_handlers
from faasd.platform import errors as platform_errors
from faasd.platform.jobs import JobValidationError
from faasd.runtime.agent_client import ProtocolError
from faasd.runtime.runc import ContainerNotFound

pytestmark = pytest.mark.unit

# What the API answered for each error class before the table moved here (then a ``status`` class
# attribute of each error): these must not change.
ANSWERED: list[tuple[type[core.FaasdError], int]] = [
    (core.FaasdError, 500),
    (core.InvalidInputError, 400),
    (core.NotFoundError, 404),
    (core.ConflictError, 409),
    (core.PayloadTooLargeError, 413),
    (core.CapacityError, 429),
    (core.AuthError, 401),
    (core.ForbiddenError, 403),
    (core.ResourceLimitError, 422),
    (core.PidsExhaustedError, 422),
    (core.DiskLimitTooLargeError, 400),
    (core.IsolationUnsupportedError, 400),
    (core.StorageFullError, 507),
    (core.RuntimeFailure, 500),
    (core.StateVersionError, 500),
    (core.RegistryError, 424),
    (core.RegistryAuthError, 424),
    (core.DigestMismatchError, 424),
    (platform_errors.InvocationTimeoutError, 504),
    (platform_errors.RateLimitedError, 429),
    (platform_errors.UnavailableError, 503),
    (JobValidationError, 422),
    (ContainerNotFound, 404),
    (ProtocolError, 500),
]


def _all_error_classes() -> list[type[core.FaasdError]]:
    """Every FaasdError subclass defined anywhere under ``faasd`` (all modules imported first)."""
    for info in pkgutil.walk_packages(faasd.__path__, "faasd."):
        # not importable as plain modules: entry points (run on import), Alembic's env script (needs a
        # running migration) and its revision scripts
        if not info.name.endswith(".__main__") and not info.name.startswith("faasd.state.migrations."):
            importlib.import_module(info.name)
    found: list[type[core.FaasdError]] = []
    todo: list[type[core.FaasdError]] = [core.FaasdError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("faasd.") and cls not in found:
            found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_error_class_in_the_tree_has_a_status() -> None:
    classes = _all_error_classes()
    assert len(classes) >= len(ANSWERED)
    missing = [f"{c.__module__}.{c.__qualname__} ({c.code!r})" for c in classes if c.code not in HTTP_STATUS]
    assert not missing, (
        "error classes whose code has no HTTP status: add a line to HTTP_STATUS in "
        "src/faasd/api/errors.py for each of: " + ", ".join(missing)
    )


def test_no_error_class_below_the_api_carries_a_status() -> None:
    carrying = [f"{c.__module__}.{c.__qualname__}" for c in _all_error_classes() if "status" in vars(c)]
    assert carrying == [], "statuses belong to faasd.api.errors.HTTP_STATUS, not to: " + ", ".join(carrying)


@pytest.mark.parametrize(("cls", "status"), ANSWERED, ids=[c.__name__ for c, _ in ANSWERED])
def test_statuses_are_the_ones_the_api_answered_before(cls: type[core.FaasdError], status: int) -> None:
    assert http_status(cls("m")) == status


def test_a_code_without_an_entry_falls_back_to_its_base_class() -> None:
    class QuotaTest(core.CapacityError):
        code = "quota_test_not_in_the_table"

    class Odd(core.FaasdError):
        code = "odd_test_not_in_the_table"

    assert http_status(QuotaTest("m")) == 429
    assert http_status(Odd("m")) == 500


def test_the_app_answers_with_the_table() -> None:
    app = FastAPI()
    install_error_handlers(app)
    by_name = {cls.__name__: cls for cls, _ in ANSWERED}

    @app.get("/raise/{name}")
    async def _raise(name: str) -> None:
        raise by_name[name](f"boom {name}", where="test")

    with TestClient(app, raise_server_exceptions=False) as client:
        for cls, status in ANSWERED:
            r = client.get(f"/raise/{cls.__name__}")
            assert r.status_code == status, cls
            body = r.json()
            assert body["error"] == cls.code and body["message"] == f"boom {cls.__name__}", body
            assert body["details"]["where"] == "test"
            if status == 429:
                assert r.headers["retry-after"] == "1"
            if cls is core.AuthError:
                assert "Bearer" in r.headers["www-authenticate"]


def test_every_status_of_the_table_is_declared_in_the_openapi_document() -> None:
    from faasd.api.openapi_docs import ALL_ERRORS, ERRORS

    undeclared = {code: status for code, status in HTTP_STATUS.items() if status not in ALL_ERRORS}
    assert undeclared == {}, "add these statuses to ALL_ERRORS/ERRORS in src/faasd/api/openapi_docs.py"
    assert set(ALL_ERRORS) <= set(ERRORS)
