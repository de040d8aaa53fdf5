import itertools

import pytest
from pydantic import ValidationError

from shared.lifecycle import (
    ACTIVE_STATUSES,
    STATUSES,
    TERMINAL_STATUSES,
    TaskStatus,
    is_terminal,
    max_attempts_message,
    may_move,
    result_ending,
    result_status,
    sources,
)
from shared.models import TaskRecord

# The oracle: status only moves forward in this rank, written apart from the module under test.
STATUS_RANK = {"pending": 0, "processing": 1, "completed": 2, "failed": 2, "cancelled": 2}


@pytest.mark.parametrize(("current", "new"), list(itertools.product(STATUSES, STATUSES)))
def test_lifecycle_status_only_moves_forward(current: TaskStatus, new: TaskStatus) -> None:
    allowed = may_move(current, new)
    if current in TERMINAL_STATUSES:
        assert not allowed, "terminal states are final"
    elif new == current == "processing":
        assert allowed, "progress reports repeat processing"
    else:
        assert allowed == (STATUS_RANK[new] > STATUS_RANK[current])


def test_lifecycle_result_may_arrive_straight_from_pending() -> None:
    assert may_move("pending", "completed")
    assert may_move("pending", "failed")


def test_lifecycle_nothing_goes_back_to_pending() -> None:
    assert not any(may_move(s, "pending") for s in STATUSES)


def test_lifecycle_active_and_terminal_partition_the_statuses() -> None:
    assert list(STATUSES) == list(STATUS_RANK)
    assert set(ACTIVE_STATUSES) | TERMINAL_STATUSES == set(STATUSES)
    assert not set(ACTIVE_STATUSES) & TERMINAL_STATUSES
    assert [is_terminal(s) for s in STATUSES] == [False, False, True, True, True]


def test_lifecycle_sources_are_the_preconditions_of_each_move() -> None:
    assert sources("processing") == ("pending", "processing")
    assert sources("completed", "failed") == ACTIVE_STATUSES
    assert sources("cancelled") == ACTIVE_STATUSES
    assert sources("pending") == ()


def test_lifecycle_result_status_follows_success() -> None:
    assert result_status(True) == "completed"
    assert result_status(False) == "failed"
    assert result_ending(True, "ignored") == ("completed", None, None)
    assert result_ending(False, "Invalid image format") == (
        "failed",
        "drone_error",
        "Invalid image format",
    )


def test_lifecycle_max_attempts_message_names_the_last_reason() -> None:
    head, tail = max_attempts_message("timeout")
    assert f"{head}3{tail}" == "no result after 3 attempt(s) (last: timeout)"
    head, tail = max_attempts_message(None)
    assert f"{head}1{tail}" == "no result after 1 attempt(s)"


def test_lifecycle_task_status_is_what_the_records_validate() -> None:
    record = {
        "task_id": "t",
        "app_id": "a",
        "drone_id": "d",
        "task_type": "x",
        "input_data": {},
        "created_at": "2024-01-01T00:00:00.000Z",
        "updated_at": "2024-01-01T00:00:00.000Z",
    }
    for status in STATUSES:
        assert TaskRecord.model_validate({**record, "status": status}).status == status
    with pytest.raises(ValidationError):
        TaskRecord.model_validate({**record, "status": "bogus"})
