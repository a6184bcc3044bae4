"""What an API operation is: a ``Call`` (one request, one parsed response) or a ``StreamCall``
(a request whose response body is decoded line by line), and the response parsers they share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote

import httpx
from msgspec import ValidationError

from faasd.sdk._codec import convert
from faasd.sdk.errors import ProtocolError, error_from_response

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
API = "/api/v1"


def check(response: httpx.Response) -> None:
    if response.is_error:
        raise error_from_response(response)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise ProtocolError(
            f"{response.request.method} {response.request.url} answered HTTP {response.status_code} "
            f"with a body that is not JSON: {response.text[:200]!r}"
        ) from exc


def _model(type_: type[T], key: str | None = None) -> Callable[[httpx.Response], T]:
    """A parser of answers holding a ``type_`` (an API object or a list of them), at ``key`` if given."""

    def parse(response: httpx.Response) -> T:
        body = _json(response)
        if key is not None:
            if not isinstance(body, dict) or key not in body:
                raise ProtocolError(f"expected a JSON object with {key!r} from {response.request.url}")
            body = body[key]
        try:
            return convert(body, type_)
        except ValidationError as exc:
            raise ProtocolError(
                f"unexpected answer from {response.request.method} {response.request.url}: {exc}"
            ) from exc

    return parse


def _none(response: httpx.Response) -> None:
    return None


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    files: Mapping[str, tuple[str | None, bytes, str]] | None = None
    headers: Mapping[str, str] | None = None
    timeout: httpx.Timeout | None = None
    """None: the client's default."""
    check: Callable[[httpx.Response], None] = check


class LineDecoder(Protocol[T_co]):
    done: bool

    def feed(self, line: str) -> Sequence[T_co]: ...

    def end(self) -> Sequence[T_co]: ...


@dataclass(frozen=True)
class StreamCall(Generic[T]):
    method: str
    path: str
    decoder: Callable[[], LineDecoder[T]]
    params: Mapping[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    files: Mapping[str, tuple[str | None, bytes, str]] | None = None
    headers: Mapping[str, str] | None = None
    timeout: httpx.Timeout | None = None


def _p(segment: str) -> str:
    return quote(segment, safe="")


def _obj(r: httpx.Response) -> dict[str, Any]:
    data: dict[str, Any] = _json(r)
    return data
