from dispatcher.service import effective_priority
from shared.clock import iso_before, now_iso
from shared.models import TaskRecord


def _task(priority: int, waited_s: float) -> TaskRecord:
    created = iso_before(waited_s)
    return TaskRecord(
        task_id="task_0",
        app_id="A",
        drone_id="D",
        task_type="t",
        input_data={},
        priority=priority,
        created_at=created,
        updated_at=created,
    )


def test_aging_off_keeps_the_submitted_priority() -> None:
    assert effective_priority(_task(1, waited_s=3600), None) == 1


def test_aging_raises_priority_one_level_per_interval_up_to_critical() -> None:
    assert effective_priority(_task(1, waited_s=5), 10.0) == 1
    assert effective_priority(_task(1, waited_s=25), 10.0) == 3
    assert effective_priority(_task(2, waited_s=3600), 10.0) == 5


def test_aging_is_measured_at_the_given_moment() -> None:
    task = _task(1, waited_s=0)
    assert effective_priority(task, 1.0, at=task.created_at) == 1
    assert effective_priority(task, 1.0, at=now_iso()) == 1
