"""Identifiers: task ids from the spec (`task_…`) and MongoDB-style result ids."""

import itertools
import os
import re
import secrets
import time

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID_RE = re.compile(ID_PATTERN)

_object_id_counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
_object_id_process = os.urandom(5)


def is_valid_client_id(value: str) -> bool:
    """App and drone ids become queue names, so they are held to a safe alphabet."""
    return _ID_RE.fullmatch(value) is not None


def new_task_id() -> str:
    # 16 hex characters = 64 random bits: collisions are negligible at any fleet size.
    return f"task_{secrets.token_hex(8)}"


def new_object_id() -> str:
    """A 24-hex id laid out like a BSON ObjectId (time, process, counter), so ids sort by time."""
    counter = next(_object_id_counter) & 0xFFFFFF
    raw = int(time.time()).to_bytes(4, "big") + _object_id_process + counter.to_bytes(3, "big")
    return raw.hex()
