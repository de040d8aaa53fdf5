"""What the SDK raises. Every error derives from ClientError:

ClientError
├── TaskFailed          a task ended failed or cancelled (error_code, message)
├── TaskRejected        a submission was refused (rate_limited, forbidden, frame_too_large, ...)
├── FrameTooLarge       a frame over the gateway's limit, which it would close the socket over
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


ERR_FRAME_TOO_LARGE = "frame_too_large"
"""TaskRejected's code for a submission too large to send: the SDK's, not the server's."""


class TaskRejected(ClientError):
    """The server did not accept a submission; nothing was stored. `code` (also `error_code`)
    is the server's error code; `retry_after_s` is set for limits that lift with time."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    @property
    def error_code(self) -> str:
        return self.code


class FrameTooLarge(ClientError):
    """A frame larger than the gateway's limit (`max_frame_bytes` in its welcome). Sending it
    would only get the socket closed with 1009, again after every reconnect."""

    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(
            f"the frame is {size_bytes} bytes, over the gateway's limit of {limit_bytes} bytes"
        )
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class ConnectionRefused(ClientError):
    """The server refused the connection in a way another attempt will not change."""


class Superseded(ClientError):
    """Another connection with this drone id replaced ours; reconnecting would fight it."""


class RequestFailed(ClientError):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail
