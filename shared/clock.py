"""Timestamps are fixed-width UTC ISO 8601 strings, so they sort as text in every store."""

from datetime import UTC, datetime, timedelta


def format_timestamp(moment: datetime) -> str:
    # isoformat is implemented in C; strftime is several times slower on this hot path.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


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
