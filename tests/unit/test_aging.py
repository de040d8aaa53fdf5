from dispatcher.service import Dispatcher
from shared.clock import iso_before, now_iso
from shared.models import TaskRecord
from shared.settings import Settings


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


def _dispatcher(aging_interval_s: float | None) -> Dispatcher:
    settings = Settings(aging_interval_s=aging_interval_s)
    return Dispatcher(settings, broker=None, store=None)  # type: ignore[arg-type]


def test_aging_off_keeps_the_submitted_priority() -> None:
    assert _dispatcher(None).effective_priority(_task(1, waited_s=3600)) == 1


def test_aging_raises_priority_one_level_per_interval_up_to_critical() -> None:
    dispatcher = _dispatcher(10.0)
    assert dispatcher.effective_priority(_task(1, waited_s=5)) == 1
    assert dispatcher.effective_priority(_task(1, waited_s=25)) == 3
    assert dispatcher.effective_priority(_task(2, waited_s=3600)) == 5


def test_aging_is_measured_at_the_given_moment() -> None:
    task = _task(1, waited_s=0)
    assert _dispatcher(1.0).effective_priority(task, at=task.created_at) == 1
    assert _dispatcher(1.0).effective_priority(task, at=now_iso()) == 1
