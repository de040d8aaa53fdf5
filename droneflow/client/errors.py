"""What the SDK raises. Every error derives from ClientError:

ClientError
├── TaskFailed          a task ended failed or cancelled (error_code, message)
├── TaskRejected        the server refused a submission (rate_limited, too_many_pending, ...)
├── ConnectionRefused   the server will not take this client (bad id, bad token): no retry
├── Superseded          a newer connection with the same drone id took over (close 4000)
└── RequestFailed       a REST call answered with an error status
"""

from typing import Any


class ClientError(Exception):
    """Base of every error the SDK raises on purpose."""


class TaskFailed(ClientError):
    """The task ended `failed` or `cancelled`. `error_code` is the server's (`drone_error`,
    `timeout`, `expired`, `max_attempts`, `cancelled`)."""

    def __init__(self, task_id: str, status: str, error_code: str, message: str) -> None:
        super().__init__(f"task {task_id} {status} ({error_code}): {message}")
        self.task_id = task_id
        self.status = status
        self.error_code = error_code
        self.message = message


class TaskRejected(ClientError):
    """The server did not accept a submission; nothing was stored. `retry_after_s` is set for
    limits that lift with time."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


class ConnectionRefused(ClientError):
    """The server refused the connection in a way another attempt will not change."""


class Superseded(ClientError):
    """Another connection with this drone id replaced ours; reconnecting would fight it."""


class RequestFailed(ClientError):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail
