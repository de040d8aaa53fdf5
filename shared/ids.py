"""Identifiers: task ids from the spec (`task_…`) and MongoDB-style result ids."""

import itertools
import os
import re
import time
from collections.abc import Iterator

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID_RE = re.compile(ID_PATTERN)

_object_id_counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
_object_id_process = os.urandom(5)


def is_valid_client_id(value: str) -> bool:
    """App and drone ids become queue names, so they are held to a safe alphabet."""
    return _ID_RE.fullmatch(value) is not None


_random_hex: Iterator[str] = iter(())  # 16 hex each, refilled from os.urandom 512 at a time


def new_task_id() -> str:
    """`task_`, the time in milliseconds (12 hex), then 64 random bits (16 hex).

    The time prefix makes new ids sort after older ones, so inserting one touches the last page
    of the task_id index instead of a random page (fewer pages per commit); the random part
    keeps ids unguessable and collisions negligible at any fleet size."""
    global _random_hex
    try:
        suffix = next(_random_hex)
    except StopIteration:
        block = os.urandom(8 * 512).hex()
        _random_hex = iter([block[i : i + 16] for i in range(0, len(block), 16)])
        suffix = next(_random_hex)
    return f"task_{time.time_ns() // 1_000_000:012x}{suffix}"


def new_object_id() -> str:
    """A 24-hex id laid out like a BSON ObjectId (time, process, counter), so ids sort by time."""
    counter = next(_object_id_counter) & 0xFFFFFF
    raw = int(time.time()).to_bytes(4, "big") + _object_id_process + counter.to_bytes(3, "big")
    return raw.hex()
