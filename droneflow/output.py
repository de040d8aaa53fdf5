"""How the commands print: JSON documents for scripts, tables for people."""

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

# A table is printed at its natural width, also on a terminal narrower than it (the terminal
# wraps its lines): a shortened cell is a wrong task id or status, and rich shortens whole
# columns away. Piped, there is no terminal width anyway.
UNBOUNDED_WIDTH = 100_000


def console(*, stderr: bool = False, unbounded: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = UNBOUNDED_WIDTH if unbounded or not stream.isatty() else None
    # Cells and messages hold data from apps and drones: never read as markup or emoji codes.
    return Console(
        file=stream, width=width, highlight=False, markup=False, emoji=False, soft_wrap=False
    )


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list | bool):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """One row per item, one line each, every cell whole."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for header in headers:
        table.add_column(header, no_wrap=True)
    for row in rows:
        table.add_row(*(cell(value) for value in row))
    console(unbounded=True).print(table)


def print_fields(document: Mapping[str, Any]) -> None:
    """One document as `field  value` lines."""
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in document.items():
        table.add_row(key, cell(value))
    console().print(table)
