"""The task state machine, in one place. Stores encode these rules in their conditional writes;
this module states them so that code and tests can check them without a store.

    pending ──▶ processing ──▶ completed | failed          (terminal states are final)
       └────────────┴────────▶ failed | cancelled
"""

from typing import Final

from shared.models import TERMINAL_STATUSES, TaskStatus

ACTIVE_STATUSES: Final = ("pending", "processing")

_ALLOWED: Final[dict[str, frozenset[str]]] = {
    "pending": frozenset({"processing", "completed", "failed", "cancelled"}),
    # "processing" again is a progress report: the status stays, the app hears about it.
    "processing": frozenset({"processing", "completed", "failed", "cancelled"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}


def may_move(current: TaskStatus, new: TaskStatus) -> bool:
    return new in _ALLOWED[current]


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


def result_status(success: bool) -> TaskStatus:
    return "completed" if success else "failed"
