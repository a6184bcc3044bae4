"""The SSE and NDJSON line decoders on their own (edge cases of the event-stream format)."""

from __future__ import annotations

import pytest

from faasd.sdk._streams import ServerSentEvent, SSEDecoder, decode_ndjson_line
from faasd.sdk.errors import ProtocolError

pytestmark = pytest.mark.unit


def _decode(text: str) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [e for line in text.split("\n") if (e := decoder.decode(line)) is not None]
    last = decoder.flush()
    return events + ([last] if last is not None else [])


def test_multiline_data_comments_and_defaults() -> None:
    events = _decode(": ping\n\ndata: a\ndata:b\ndata:  c\n\n")
    assert events == [ServerSentEvent(event="message", data="a\nb\n c")]


def test_id_retry_unknown_fields_and_crlf() -> None:
    events = _decode("id: 7\r\nretry: 1500\r\nevent: stdout\r\nfoo: bar\r\ndata: x\r\n\r\n")
    assert events == [ServerSentEvent(event="stdout", data="x", id="7", retry=1500)]


def test_event_without_trailing_blank_line_is_flushed() -> None:
    assert _decode("event: result\ndata: {}") == [ServerSentEvent(event="result", data="{}")]


def test_empty_data_field_still_dispatches() -> None:
    assert _decode("event: stdout\ndata\n\n") == [ServerSentEvent(event="stdout", data="")]


def test_event_json() -> None:
    assert ServerSentEvent(data='{"a": 1}').json() == {"a": 1}
    with pytest.raises(ProtocolError):
        ServerSentEvent(data="nope").json()


def test_ndjson_lines() -> None:
    assert decode_ndjson_line('  {"text": "x"}  ') == {"text": "x"}
    assert decode_ndjson_line("   ") is None
    with pytest.raises(ProtocolError):
        decode_ndjson_line("[1, 2]")
    with pytest.raises(ProtocolError):
        decode_ndjson_line("{oops")
