import re
from datetime import UTC, datetime

import orjson
import pytest
from pydantic import ValidationError

from shared.broker.queues import Queues
from shared.clock import format_timestamp, normalize_timestamp, now_iso, parse_timestamp
from shared.ids import is_valid_client_id, new_object_id, new_task_id
from shared.models import ResultRecord, TaskRecord
from shared.protocol import (
    CreateTaskRequest,
    DroneEvent,
    DroneResult,
    DroneStatusUpdate,
    TaskRequest,
    drone_task_frame,
    encode_drone_event,
    result_received_frame,
    status_update_frame,
    welcome_frame,
)
from shared.settings import Settings

BODY = {
    "app_id": "App001",
    "drone_id": "Drone001",
    "task_type": "image_analysis",
    "input_data": {"image_url": "https://example.com/image.jpg"},
    "priority": 3,
}


def _task(**overrides: object) -> TaskRecord:
    values: dict[str, object] = {
        **BODY,
        "task_id": "task_0123456789abcdef",
        "created_at": "2024-01-01T12:00:00.000Z",
        "updated_at": "2024-01-01T12:00:00.000Z",
    }
    values.update(overrides)
    return TaskRecord.model_validate(values)


def test_create_request_accepts_the_spec_body_and_defaults_priority_to_normal() -> None:
    assert CreateTaskRequest.model_validate(BODY).priority == 3
    body = {k: v for k, v in BODY.items() if k != "priority"}
    request = CreateTaskRequest.model_validate(body)
    assert request.priority == 2
    assert request.max_attempts is None and request.idempotency_key is None


@pytest.mark.parametrize("priority", [0, 6, 2.5, "3", True, None])
def test_create_request_rejects_priorities_that_are_not_integers_from_1_to_5(
    priority: object,
) -> None:
    with pytest.raises(ValidationError):
        CreateTaskRequest.model_validate({**BODY, "priority": priority})


@pytest.mark.parametrize("bad", ["", "a b", "x" * 65, "a.b", "é", "a/b"])
def test_client_ids_are_held_to_a_queue_safe_alphabet(bad: str) -> None:
    assert not is_valid_client_id(bad)
    with pytest.raises(ValidationError):
        CreateTaskRequest.model_validate({**BODY, "drone_id": bad})
    assert is_valid_client_id("Drone_01-x")


def test_create_request_ignores_unknown_fields() -> None:
    request = CreateTaskRequest.model_validate({**BODY, "client_version": "1.2"})
    assert not hasattr(request, "client_version")


def test_ws_request_leaves_app_id_to_the_path() -> None:
    assert (
        TaskRequest.model_validate({k: v for k, v in BODY.items() if k != "app_id"}).app_id is None
    )


def test_drone_result_requires_a_strict_success_flag() -> None:
    with pytest.raises(ValidationError):
        DroneResult.model_validate({"task_id": "t", "success": "yes"})
    assert DroneResult.model_validate({"task_id": "t", "success": False}).result_data == {}


def test_task_public_view_hides_delivery_bookkeeping() -> None:
    view = _task(dispatched_at="2024-01-01T12:00:00.000Z").public_dict()
    assert {"delivery", "dispatched_at", "notified_at"}.isdisjoint(view)
    assert {"task_id", "status", "priority", "attempts", "error_code"} <= set(view)


def test_task_ids_and_result_ids_have_their_documented_shape() -> None:
    ordered = [new_task_id() for _ in range(1000)]
    ids = set(ordered)
    assert len(ids) == 1000
    # The spec asks for `task_` and at least 12 hex: ours are 12 of time and 16 of randomness.
    assert all(re.fullmatch(r"task_[0-9a-f]{28}", i) for i in ids)
    # Newer ids sort after older ones by their time prefix (inserts append to the index).
    assert [i[:17] for i in ordered] == sorted(i[:17] for i in ordered)
    object_ids = [new_object_id() for _ in range(3)]
    assert all(re.fullmatch(r"[0-9a-f]{24}", i) for i in object_ids)
    assert len(set(object_ids)) == 3


def test_timestamps_are_fixed_width_utc_iso_8601() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", now_iso())
    moment = datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert format_timestamp(moment) == "2024-01-01T12:00:00.123Z"
    assert normalize_timestamp("2024-01-01T13:00:00+01:00") == "2024-01-01T12:00:00.000Z"
    assert normalize_timestamp("2024-01-01T12:00:00") == "2024-01-01T12:00:00.000Z"
    assert parse_timestamp("2024-01-01T12:00:00Z") == datetime(2024, 1, 1, 12, tzinfo=UTC)
    with pytest.raises(ValueError, match="Invalid isoformat"):
        normalize_timestamp("yesterday")


def test_frames_have_the_spec_shapes() -> None:
    task = _task(attempts=1)
    drone = orjson.loads(drone_task_frame(task, "2024-01-01T12:00:00.000Z"))
    assert drone["type"] == "processing_task" and drone["task_id"] == task.task_id
    assert drone["task_data"] == {
        k: BODY[k] for k in ("app_id", "drone_id", "task_type", "input_data", "priority")
    }

    result = ResultRecord(
        result_id="507f1f77bcf86cd799439011",
        task_id=task.task_id,
        drone_id="Drone001",
        result_data={"detections": []},
        processing_time=0.85,
        success=True,
        timestamp="2024-01-01T12:00:00.000Z",
    )
    received = orjson.loads(result_received_frame(result, "App001"))
    assert set(received) == {
        "type",
        "result_id",
        "task_id",
        "result_data",
        "drone_id",
        "app_id",
        "success",
        "processing_time",
        "error_message",
        "timestamp",
    }
    update = orjson.loads(status_update_frame(task, {"progress": 50}))
    assert set(update) == {"type", "task_id", "status", "drone_id", "additional_data", "timestamp"}
    assert update["additional_data"] == {"progress": 50}
    assert update["timestamp"] == task.updated_at  # the stored time of the change, as REST shows
    failed = orjson.loads(
        status_update_frame(task.model_copy(update={"status": "failed", "error_code": "timeout"}))
    )
    assert failed["additional_data"]["error_code"] == "timeout"
    welcome = orjson.loads(welcome_frame("D1", "drone", "t"))
    assert welcome == {
        "type": "connection_established",
        "client_id": "D1",
        "client_type": "drone",
        "timestamp": "t",
    }


def test_queue_names_share_one_prefix() -> None:
    queues = Queues(prefix="p")
    names = [
        queues.intake.name,
        queues.drone_events.name,
        queues.drone("D").name,
        queues.app("A").name,
    ]
    assert all(n.startswith("p.") for n in names)
    assert queues.drone("D").max_priority == 5 and queues.intake.max_priority == 5
    assert queues.app("A").message_ttl_s == 24 * 3600


def test_settings_derive_the_store_from_the_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRONEFLOW_DATA_DIR", "/srv/df")
    monkeypatch.setenv("DRONEFLOW_AUTH", "disabled")
    settings = Settings()
    assert settings.store_url == "sqlite:////srv/df/droneflow.db"
    assert settings.broker_url == "memory://"
    monkeypatch.setenv("DRONEFLOW_STORE_URL", "mongodb://db/x")
    assert Settings().store_url == "mongodb://db/x"


def test_settings_reject_an_unknown_auth_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRONEFLOW_AUTH", "magic")
    with pytest.raises(ValidationError):
        Settings()


def test_drone_event_envelope_round_trips_and_tolerates_another_versions_fields() -> None:
    result = DroneResult(task_id="task_1", success=True, result_data={"n": 1})
    event = DroneEvent(
        kind="result", drone_id="D1", app_id="A1", received_at=now_iso(), result=result
    )
    assert DroneEvent.decode(event.encode()) == event
    # An envelope from an older service lacks a field; one from a newer service has an extra
    # one. Both still decode, through validation instead of the trusted fast path.
    older = orjson.loads(event.encode())
    del older["result"]["timestamp"]
    assert DroneEvent.decode(orjson.dumps(older)).result == result
    newer = orjson.loads(event.encode())
    newer["result"]["confidence"] = 0.9
    newer["trace_id"] = "x"
    decoded = DroneEvent.decode(orjson.dumps(newer))
    assert decoded.result == result and decoded.drone_id == "D1"


def test_the_gateways_drone_event_bytes_are_the_models() -> None:
    """The gateway encodes a report's event without building a DroneEvent: the bytes must be
    what DroneEvent.encode gives, for results and status updates, extra input fields dropped,
    and a timestamp the gateway rewrote after validation."""
    result = DroneResult.model_validate(
        {
            "task_id": "t1",
            "drone_id": "D1",
            "success": False,
            "error_message": "no",
            "result_data": {"a": [1, {"b": None}]},
            "processing_time": 0.5,
            "unknown": 1,
        }
    )
    result.timestamp = "2026-12-02T10:00:00.000Z"
    status = DroneStatusUpdate.model_validate(
        {"task_id": "t1", "status": "processing", "additional_data": {"progress": 50}, "x": 2}
    )
    for kind, report in (("result", result), ("status", status)):
        model = DroneEvent(
            kind=kind,  # type: ignore[arg-type]
            drone_id="D1",
            app_id="A1",
            received_at="2026-12-02T10:00:01.000Z",
            result=report if isinstance(report, DroneResult) else None,
            status=report if isinstance(report, DroneStatusUpdate) else None,
        )
        fast = encode_drone_event("D1", "A1", "2026-12-02T10:00:01.000Z", report)
        assert fast == model.encode()
        assert DroneEvent.decode(fast) == model
