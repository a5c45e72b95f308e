"""Hostile payloads against every bus message model: no input crashes a parser, errors are clear.

Each property feeds a parser bytes, arbitrary JSON, or a valid message with one field
mutated, and accepts exactly two outcomes: a message that round-trips through its own JSON,
or a ``MessageError`` whose reason names what is wrong. Anything else is a crash.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from broker.messages import MESSAGE_TYPES, Event, Message, MessageError, parse_any
from tests.hostile.strategies import EXAMPLES, TRIED, fuzz, json_values, mutated

HOSTILE_BYTES = [
    b"",
    b"\x00" * 64,
    b"\xff\xfe\xfd",
    b"[" * 100_000,
    b'{"a":' * 100_000,
    b'{"schema": "gw.event", "v": 1' + b', "x": 1' * 10_000 + b"}",
    b'{"schema": "gw.event", "ts": "0001-01-01T00:00:00+14:00"}',
    b'{"schema": "gw.event", "seq": 1e999}',
    b'{"schema": "gw.event", "seq": 123456789012345678901234567890}',
    b'{"schema": "gw.event", "seq": NaN}',
    b'{"schema": "gw.event", "reading": NaN}',
    b'{"schema": "gw.event", "reading": -Infinity}',
    b'{"schema": "gw.event", "reading": 1e999}',
    b'"just a string"',
    json.dumps({"schema": "A" * 70_000}).encode(),
    b"null",
    json.dumps({"schema": "gw.event", "device_id": "../../etc/passwd"}).encode(),
    json.dumps({"schema": "gw.event", "device_id": "edge-01\u0000"}).encode(),
    json.dumps({"schema": {"$gt": ""}}).encode(),
]


def check_outcome(parse: Any, payload: bytes | str) -> None:
    """``parse(payload)`` returns a message that round-trips, or raises a clear MessageError."""
    TRIED["bus messages"] += 1
    try:
        msg = parse(payload)
    except MessageError as exc:
        assert exc.reason.strip(), "empty error reason"
        assert len(exc.reason) < 5000, "error reason is unbounded"
        return
    assert isinstance(msg, Message)
    again = type(msg).from_json(msg.to_json())
    assert again == msg, "message does not round-trip through its own JSON"


@pytest.mark.parametrize("payload", HOSTILE_BYTES, ids=[str(i) for i in range(len(HOSTILE_BYTES))])
def test_known_hostile_payloads_get_a_clear_error(payload: bytes) -> None:
    check_outcome(parse_any, payload)
    for model in MESSAGE_TYPES.values():
        check_outcome(model.from_json, payload)


@fuzz(200)
@given(st.binary(max_size=2048))
@example(b"[" * 5000)
def test_any_bytes(payload: bytes) -> None:
    check_outcome(parse_any, payload)
    check_outcome(Event.from_json, payload)


@fuzz(200)
@given(json_values)
def test_any_json_document(doc: Any) -> None:
    check_outcome(parse_any, json.dumps(doc))
    check_outcome(Event.from_json, json.dumps(doc))


@fuzz(150)
@given(st.sampled_from(sorted(MESSAGE_TYPES)), st.data())
def test_valid_message_with_one_field_mutated(schema: str, data: st.DataObject) -> None:
    doc, _where = data.draw(mutated(schema))
    payload = json.dumps(doc)
    check_outcome(parse_any, payload)
    check_outcome(MESSAGE_TYPES[schema].from_json, payload)


@pytest.mark.parametrize("schema", sorted(MESSAGE_TYPES))
def test_error_names_the_bad_field(schema: str) -> None:
    """A wrong type in a required field comes back as ``<field>: <what was expected>``."""
    doc = dict(EXAMPLES[schema])
    field = next(k for k in doc if k not in ("schema", "v"))
    doc[field] = {"nested": ["nonsense"]}
    with pytest.raises(MessageError) as err:
        parse_any(json.dumps(doc))
    assert err.value.reason.startswith(field), err.value.reason


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_readings_are_refused(value: str) -> None:
    doc = json.dumps(EXAMPLES["gw.event"])[:-1] + f', "reading": {value}}}'
    with pytest.raises(MessageError, match="reading"):
        parse_any(doc)
    with pytest.raises(MessageError, match="reading"):
        Event.from_json(doc)


def test_unknown_fields_and_schemas_are_refused_by_name() -> None:
    doc = dict(EXAMPLES["gw.event"], admin=True)
    with pytest.raises(MessageError, match="admin: Extra inputs are not permitted"):
        parse_any(json.dumps(doc))
    with pytest.raises(MessageError, match=r"unknown schema 'gw\.rootkit'"):
        parse_any(json.dumps(dict(doc, schema="gw.rootkit")))
