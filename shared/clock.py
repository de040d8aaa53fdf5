"""Timestamps are fixed-width UTC ISO 8601 strings, so they sort as text in every store."""

import time
from datetime import UTC, datetime, timedelta


def format_timestamp(moment: datetime) -> str:
    # isoformat is implemented in C; strftime is several times slower on this hot path.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


_last_now: tuple[int, str] = (-1, "")
"""The last millisecond formatted, and its text: one tuple, so threads read a matching pair."""


def now_iso() -> str:
    # Called several times per task; within one millisecond the answer is the same.
    global _last_now
    milliseconds = time.time_ns() // 1_000_000
    if _last_now[0] != milliseconds:
        seconds, remainder = divmod(milliseconds, 1000)
        moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=remainder * 1000)
        _last_now = (milliseconds, moment.isoformat(timespec="milliseconds")[:-6] + "Z")
    return _last_now[1]


def parse_timestamp(text: str) -> datetime:
    """Accepts any ISO 8601 form a client may send; naive values are taken as UTC. ValueError
    for anything else, including a moment that falls outside years 1-9999 once in UTC."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is out of range in UTC") from None


def normalize_timestamp(text: str) -> str:
    return format_timestamp(parse_timestamp(text))


def iso_after(seconds: float, start: datetime | None = None) -> str:
    return format_timestamp((start or datetime.now(UTC)) + timedelta(seconds=seconds))


def iso_before(seconds: float) -> str:
    return format_timestamp(datetime.now(UTC) - timedelta(seconds=seconds))
