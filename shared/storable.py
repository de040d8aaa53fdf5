"""What a stored JSON document may hold: every store and every client must read it back as
it was written. JSON itself allows more than that, so the edge refuses the rest with a 4xx:

- integers outside signed 64 bits (BSON's widest integer; SQLite's too). orjson, which parses
  every body and frame, already reads integers past 64 bits as floats, as JavaScript does;
  what reaches this check is the unsigned range above int64,
- NaN and the infinities (not JSON at all, though Python's json module reads them),
- nesting deeper than MAX_DOCUMENT_DEPTH (BSON allows 100 levels, and a recursive reader
  should never be the thing that decides).
"""

import math
from typing import Final

from pydantic import JsonValue

MAX_DOCUMENT_DEPTH: Final = 32
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


def storable_document(document: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """The document itself, or ValueError naming the first value no store can keep."""
    _check(document, 1)
    return document


def _check(value: JsonValue, depth: int) -> None:
    if isinstance(value, dict):
        _check_depth(depth)
        for item in value.values():
            _check(item, depth + 1)
    elif isinstance(value, list):
        _check_depth(depth)
        for item in value:
            _check(item, depth + 1)
    elif isinstance(value, bool) or value is None or isinstance(value, str):
        return
    elif isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError("integers must fit in signed 64 bits")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite (no NaN or Infinity)")


def _check_depth(depth: int) -> None:
    if depth > MAX_DOCUMENT_DEPTH:
        raise ValueError(f"objects and arrays may nest at most {MAX_DOCUMENT_DEPTH} deep")
