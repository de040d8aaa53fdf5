"""The REST documents declared in /openapi.json name exactly the fields the stored records show
(gateway/routes/responses.py describes what routes return without validating it, so only this
keeps the two together), and a record with every field set, or none of the optional ones,
validates against its declared schema."""

import jsonschema_rs

from gateway.routes.responses import ProcessingResult, ProcessingTask
from shared.models import INTERNAL_TASK_FIELDS, ResultRecord, TaskRecord

FULL_TASK = TaskRecord(
    task_id="task_1",
    app_id="App001",
    drone_id="Drone001",
    task_type="image_analysis",
    input_data={"image_url": "https://example.com/image.jpg", "tags": [1, None, {"a": 1.5}]},
    status="failed",
    priority=5,
    created_at="2024-01-01T12:00:00.000Z",
    updated_at="2024-01-01T12:00:03.000Z",
    attempts=3,
    timeout_s=2.5,
    ttl_s=60,
    idempotency_key="k",
    delivered_at="2024-01-01T12:00:01.000Z",
    started_at="2024-01-01T12:00:02.000Z",
    finished_at="2024-01-01T12:00:03.000Z",
    error_code="max_attempts",
    error_message="timed out 3 times",
)
BARE_TASK = TaskRecord(
    task_id="task_2",
    app_id="App001",
    drone_id="Drone001",
    task_type="t",
    input_data={},
    created_at="2024-01-01T12:00:00.000Z",
    updated_at="2024-01-01T12:00:00.000Z",
)
RESULT = ResultRecord(
    result_id="r1",
    task_id="task_1",
    drone_id="Drone001",
    result_data={},
    success=False,
    timestamp="2024-01-01T12:00:03.000Z",
)


def test_openapi_task_document_names_exactly_the_public_task_fields() -> None:
    assert list(ProcessingTask.model_fields) == [
        name for name in TaskRecord.model_fields if name not in INTERNAL_TASK_FIELDS
    ]
    assert list(BARE_TASK.public_dict()) == list(ProcessingTask.model_fields)


def test_openapi_result_document_names_exactly_the_result_fields() -> None:
    assert list(ProcessingResult.model_fields) == list(ResultRecord.model_fields)
    assert list(RESULT.public_dict()) == list(ProcessingResult.model_fields)


def test_openapi_task_and_result_schemas_accept_the_records_routes_return() -> None:
    task_schema = jsonschema_rs.validator_for(
        ProcessingTask.model_json_schema(mode="serialization")
    )
    result_schema = jsonschema_rs.validator_for(
        ProcessingResult.model_json_schema(mode="serialization")
    )
    for task in (FULL_TASK, BARE_TASK):
        assert [e.message for e in task_schema.iter_errors(task.public_dict())] == []
    assert result_schema.is_valid(RESULT.public_dict())
    # and every field is required: a document missing one is not what a route returns
    partial = BARE_TASK.public_dict()
    del partial["ttl_s"]
    assert not task_schema.is_valid(partial)
