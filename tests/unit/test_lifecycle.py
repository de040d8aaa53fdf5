import itertools

import pytest

from shared.lifecycle import ACTIVE_STATUSES, is_terminal, may_move, result_status
from shared.models import STATUS_RANK, TERMINAL_STATUSES

STATUSES = ["pending", "processing", "completed", "failed", "cancelled"]


@pytest.mark.parametrize(("current", "new"), list(itertools.product(STATUSES, STATUSES)))
def test_lifecycle_status_only_moves_forward(current: str, new: str) -> None:
    allowed = may_move(current, new)  # type: ignore[arg-type]
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
    assert not any(may_move(s, "pending") for s in STATUSES)  # type: ignore[arg-type]


def test_lifecycle_active_and_terminal_partition_the_statuses() -> None:
    assert set(ACTIVE_STATUSES) | TERMINAL_STATUSES == set(STATUSES)
    assert not set(ACTIVE_STATUSES) & TERMINAL_STATUSES
    assert [is_terminal(s) for s in STATUSES] == [False, False, True, True, True]


def test_lifecycle_result_status_follows_success() -> None:
    assert result_status(True) == "completed"
    assert result_status(False) == "failed"
