"""The parts of shared.metrics and shared.health's readiness that no end-to-end run reaches
easily: the bound on client-chosen labels, clock skew, and the /readyz body of each outcome."""

from typing import Any

from prometheus_client import REGISTRY

from shared.health import Readiness
from shared.metrics import BoundedLabels, task_finished
from shared.models import TaskRecord


def test_bounded_labels_pass_the_first_values_and_fold_the_rest_into_other() -> None:
    labels = BoundedLabels(limit=2)

    passed = [labels(value) for value in ("a", "b", "c", "a", "d", "b")]

    assert passed == ["a", "b", "other", "a", "other", "b"]


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _finished_task(**fields: Any) -> TaskRecord:
    values: dict[str, Any] = {
        "task_id": "task_skew",
        "app_id": "A",
        "drone_id": "D",
        "task_type": "unit_skew",
        "input_data": {},
        "status": "completed",
        "created_at": "2030-01-01T00:00:10.000Z",
        "updated_at": "2030-01-01T00:00:09.000Z",
        "delivered_at": "2030-01-01T00:00:09.500Z",
        "finished_at": "2030-01-01T00:00:09.000Z",
        "delivery": "delivered",
        "attempts": 1,
    }
    values.update(fields)
    return TaskRecord(**values)


def test_a_final_state_stamped_before_creation_by_a_skewed_clock_counts_as_zero() -> None:
    bucket = "droneflow_task_round_trip_seconds_bucket"
    before = _sample(bucket, status="completed", le="0.005")

    task_finished(_finished_task())

    assert _sample(bucket, status="completed", le="0.005") == before + 1


def test_a_task_that_timed_out_for_good_counts_its_time_with_the_drone() -> None:
    count = "droneflow_task_stage_seconds_count"
    before = _sample(count, stage="delivered")

    task_finished(_finished_task(status="failed", error_code="max_attempts", delivery="queued"))
    task_finished(_finished_task(status="cancelled", error_code="cancelled", delivery="queued"))

    assert _sample(count, stage="delivered") == before + 1  # the cancelled one was not held


def test_readiness_names_each_dependency_and_why_when_one_is_away() -> None:
    ready = Readiness({})
    away = Readiness({"rabbitmq": "is unreachable"})
    both = Readiness({"rabbitmq": "is unreachable", "store": "did not answer within 2 s"})

    assert (ready.status_code, ready.body()) == (
        200,
        {"status": "ready", "rabbitmq": "ok", "store": "ok"},
    )
    assert (away.status_code, away.body()) == (
        503,
        {
            "status": "unavailable",
            "rabbitmq": "unavailable",
            "store": "ok",
            "reason": "rabbitmq is unreachable",
        },
    )
    assert both.body()["reason"] == ("rabbitmq is unreachable; store did not answer within 2 s")
