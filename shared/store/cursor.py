"""The opaque pagination cursor of `TaskStore.list_tasks`, the same for every adapter, so a
client's cursor stays valid whichever store answers it."""

import base64
import binascii

_TIMESTAMP_WIDTH = len("2024-01-01T12:00:00.000Z")


def encode_cursor(updated_at: str, task_id: str) -> str:
    return base64.urlsafe_b64encode(f"v1|{updated_at}|{task_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    """Raises ValueError for a cursor no store issued."""
    try:
        version, updated_at, task_id = (
            base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 2)
        )
    except (ValueError, binascii.Error, UnicodeError):
        raise ValueError(f"invalid cursor: {cursor!r}") from None
    if version != "v1" or len(updated_at) != _TIMESTAMP_WIDTH or not task_id:
        raise ValueError(f"invalid cursor: {cursor!r}")
    return updated_at, task_id
