"""Timestamps are fixed-width UTC ISO 8601 strings, so they sort as text in every store."""

from datetime import UTC, datetime, timedelta

_FORMAT = "%Y-%m-%dT%H:%M:%S"


def format_timestamp(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return f"{moment.strftime(_FORMAT)}.{moment.microsecond // 1000:03d}Z"


def now_iso() -> str:
    return format_timestamp(datetime.now(UTC))


def parse_timestamp(text: str) -> datetime:
    """Accepts any ISO 8601 form a client may send; naive values are taken as UTC."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def normalize_timestamp(text: str) -> str:
    return format_timestamp(parse_timestamp(text))


def iso_after(seconds: float, start: datetime | None = None) -> str:
    return format_timestamp((start or datetime.now(UTC)) + timedelta(seconds=seconds))


def iso_before(seconds: float) -> str:
    return format_timestamp(datetime.now(UTC) - timedelta(seconds=seconds))
