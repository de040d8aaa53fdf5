"""The task state machine, in one place: the statuses, which moves are allowed, and the error
codes and messages a task ends with. Both stores derive their conditional writes from it (the
SQL WHERE terms and the MongoDB filters), and services ask it whether a status is final.

    pending ──▶ processing ──▶ completed | failed          (terminal states are final)
       └────────────┴────────▶ failed | cancelled
"""

from typing import Final, Literal, get_args

TaskStatus = Literal["pending", "processing", "completed", "failed", "cancelled"]
ErrorCode = Literal["timeout", "expired", "max_attempts", "drone_error", "cancelled"]

STATUSES: Final[tuple[TaskStatus, ...]] = get_args(TaskStatus)
ACTIVE_STATUSES: Final[tuple[TaskStatus, ...]] = ("pending", "processing")
TERMINAL_STATUSES: Final = frozenset(STATUSES) - frozenset(ACTIVE_STATUSES)

_ALLOWED: Final[dict[TaskStatus, frozenset[TaskStatus]]] = {
    "pending": frozenset({"processing", "completed", "failed", "cancelled"}),
    # "processing" again is a progress report: the status stays, the app hears about it.
    "processing": frozenset({"processing", "completed", "failed", "cancelled"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}

DRONE_REPORTABLE: Final[frozenset[TaskStatus]] = frozenset({"processing"})
"""The statuses a drone may report; a drone ends a task with a result, never a status."""

CANCELLED_MESSAGE: Final = "cancelled by the application"
EXPIRED_MESSAGE: Final = "no drone took the task within its ttl_s"


def may_move(current: TaskStatus, new: TaskStatus) -> bool:
    return new in _ALLOWED[current]


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


def sources(*targets: TaskStatus) -> tuple[TaskStatus, ...]:
    """The statuses from which a task may move to each of `targets`, in declaration order: the
    precondition of a store's conditional write for that move."""
    return tuple(status for status in STATUSES if all(may_move(status, new) for new in targets))


def result_status(success: bool) -> TaskStatus:
    return "completed" if success else "failed"


def result_ending(
    success: bool, error_message: str | None
) -> tuple[TaskStatus, ErrorCode | None, str | None]:
    """(status, error_code, error_message) of a task that a drone's result ends."""
    if success:
        return "completed", None, None
    return "failed", "drone_error", error_message


def max_attempts_message(reason: ErrorCode | None) -> tuple[str, str]:
    """The error_message of a task that failed with `max_attempts`, as the text before and
    after its attempt count: the stores put the count in between inside their atomic write."""
    last = "" if reason is None else f" (last: {reason})"
    return "no result after ", f" attempt(s){last}"
