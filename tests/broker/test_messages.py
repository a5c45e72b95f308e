"""Message schemas: every model round-trips JSON; unknown fields and malformed payloads are refused."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from broker.messages import (
    CameraOverride,
    CameraStatus,
    Command,
    CommandResult,
    DeviceConfig,
    DeviceStatus,
    Event,
    Evidence,
    Message,
    MessageError,
    SupervisorAlert,
    TicketPush,
    parse_any,
)

NOW = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
JPEG = b"\xff\xd8\xff\xe0" + b"0" * 60 + b"\xff\xd9"


def samples() -> list[Message]:
    return [
        Event(
            event_id=uuid.uuid4(),
            device_id="edge-01",
            source_id="cam-01",
            source_type="camera",
            kind="garbage",
            state="new",
            seq=7,
            ts=NOW,
            track_id="t1",
            confidence=0.8,
            bbox=(0.1, 0.2, 0.3, 0.4),
            position={"lat": 39.9, "lon": 116.4},  # type: ignore[arg-type]
            model_version="m1",
            snapshot=Evidence.from_jpeg(JPEG, 320, 240, crop=JPEG),
        ),
        Event(
            event_id=uuid.uuid4(),
            device_id="node-01",
            source_id="bin-01",
            source_type="sensor",
            kind="bin_full",
            state="cleared",
            seq=0,
            ts=NOW,
            reading=40.5,
            measure="fill_pct",
        ),
        DeviceStatus(
            device_id="edge-01",
            online=True,
            ts=NOW,
            uptime_s=12.5,
            outbox_depth=3,
            cameras=(CameraStatus(camera_id="cam-01", state="ok", fps=2.0, skipped_ratio=0.9),),
        ),
        DeviceConfig(
            device_id="edge-01",
            revision=2,
            issued_at=NOW,
            cameras={"cam-01": CameraOverride(sample_fps=1.0, zones=(((0, 0), (1, 0), (1, 1)),))},
        ),
        Command(
            command_id=uuid.uuid4(),
            device_id="edge-01",
            action="verify",
            issued_at=NOW,
            camera_id="cam-01",
            kind="garbage",
            region=(0.1, 0.1, 0.5, 0.5),
            ticket_id="12",
        ),
        CommandResult(
            command_id=uuid.uuid4(),
            device_id="edge-01",
            action="verify",
            ts=NOW,
            outcome="clear",
            camera_id="cam-01",
            ticket_id="12",
        ),
        TicketPush(
            ticket_id="12",
            worker_id="w01",
            action="assigned",
            status="assigned",
            category="garbage",
            priority=3,
            opened_at=NOW,
            deadline=NOW,
            ts=NOW,
        ),
        SupervisorAlert(
            supervisor_id="sup-s1",
            ticket_id="12",
            reason="safety",
            category="manhole_missing",
            ts=NOW,
        ),
    ]


@pytest.mark.parametrize("msg", samples(), ids=lambda m: type(m).__name__)
def test_round_trip(msg: Message) -> None:
    wire = msg.to_json()
    assert json.loads(wire)["schema"] == msg.SCHEMA
    assert type(msg).from_json(wire) == msg
    assert parse_any(wire) == msg


@pytest.mark.parametrize("msg", samples(), ids=lambda m: type(m).__name__)
def test_unknown_field_is_refused(msg: Message) -> None:
    doc = json.loads(msg.to_json())
    doc["surprise"] = 1
    with pytest.raises(MessageError, match="surprise: Extra inputs are not permitted"):
        type(msg).from_json(json.dumps(doc))


@pytest.mark.parametrize("msg", samples(), ids=lambda m: type(m).__name__)
def test_a_nul_character_anywhere_is_refused_by_name(msg: Message) -> None:
    """PostgreSQL cannot store NUL in text; the parser refuses it, naming where it is."""
    doc = json.loads(msg.to_json())
    doc["device_id" if "device_id" in doc else "schema"] += "\x00"
    with pytest.raises(MessageError, match=r"text contains a NUL character"):
        type(msg).from_json(json.dumps(doc))
    nested = json.loads(msg.to_json())
    nested["surprise\x00"] = 1
    with pytest.raises(MessageError, match=r"surprise.*NUL character"):
        type(msg).from_json(json.dumps(nested))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe garbage", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"schema": "gw.nope", "v": 1}', "unknown schema"),
        (b'{"schema": "gw.event", "v": 2}', "v: Input should be 1"),
    ],
)
def test_malformed_payloads_name_the_problem(payload: bytes, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        parse_any(payload)


def test_event_rules() -> None:
    base = json.loads(samples()[0].to_json())
    with pytest.raises(MessageError, match="x2 > x1"):
        Event.from_json(json.dumps({**base, "bbox": [0.5, 0.1, 0.2, 0.4]}))
    with pytest.raises(MessageError, match="timezone"):
        Event.from_json(json.dumps({**base, "ts": "2026-03-01T08:30:00"}))
    with pytest.raises(MessageError, match="confidence"):
        Event.from_json(json.dumps({**base, "confidence": 1.5}))
    with pytest.raises(MessageError, match="not a JPEG"):
        Event.from_json(
            json.dumps(
                {**base, "snapshot": {"jpeg_b64": "aGVsbG8gd29ybGQ=", "width": 1, "height": 1}}
            )
        )
    with pytest.raises(ValueError, match="verify needs camera_id and kind"):
        Command(command_id=uuid.uuid4(), device_id="edge-01", action="verify", issued_at=NOW)
