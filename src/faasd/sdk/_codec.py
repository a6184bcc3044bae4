"""Between the SDK's API objects (``msgspec.Struct``s, :mod:`faasd.sdk.models`) and JSON data: reading an
answer into one (validated), building a request from caller-given options, and back to JSON-ready data."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

M = TypeVar("M")
R = TypeVar("R", bound=msgspec.Struct)


def without_none(obj: msgspec.Struct) -> dict[str, Any]:
    """``obj`` as JSON-ready data without the fields that are None, in nested objects too."""
    out: dict[str, Any] = {}
    for name, value in msgspec.structs.asdict(obj).items():
        if value is None:
            continue
        if isinstance(value, msgspec.Struct):
            out[name] = without_none(value)
        elif isinstance(value, list):
            out[name] = [without_none(v) if isinstance(v, msgspec.Struct) else to_builtins(v) for v in value]
        else:
            out[name] = to_builtins(value)
    return out


def to_builtins(value: Any) -> Any:
    """``value`` (API objects, lists and dicts of them, datetimes) as JSON-ready data, every field kept."""
    return msgspec.to_builtins(value)


def convert(data: Any, type_: type[M]) -> M:
    """``data`` (parsed JSON) as the API object ``type_``; ``msgspec.ValidationError`` (a ValueError)
    names the first field that does not fit."""
    return msgspec.convert(data, type_, strict=False)


def request_from(data: dict[str, Any], type_: type[R], what: str) -> R:
    """The request object ``type_`` built from caller-given ``data`` (``what``: its options, for messages):
    a ValueError naming any key that is not one of its fields, or the first value of the wrong type,
    before anything is sent (the constructor checks neither)."""
    unknown = sorted(set(data) - set(type_.__struct_fields__))
    if unknown:
        raise ValueError(f"unknown {what} option(s): {', '.join(unknown)}")
    return convert(data, type_)
