"""How the commands print: JSON documents for scripts, tables for people."""

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

# Piped into a file or another program there is no terminal width to fit: a table keeps its
# natural width, so that no cell (a task id above all) is cut or folded.
UNBOUNDED_WIDTH = 100_000


def console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else UNBOUNDED_WIDTH
    # Cells and messages hold data from apps and drones: never read as markup or emoji codes.
    return Console(
        file=stream, width=width, highlight=False, markup=False, emoji=False, soft_wrap=False
    )


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, id_column: int = 0
) -> None:
    """One row per item. The id column never shrinks: people copy ids from it."""
    texts = [[cell(value) for value in row] for row in rows]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for index, header in enumerate(headers):
        if index == id_column:
            widest = max((len(row[index]) for row in texts), default=len(header))
            table.add_column(header, no_wrap=True, min_width=max(widest, len(header)))
        else:
            table.add_column(header, overflow="fold")
    for row in texts:
        table.add_row(*row)
    console().print(table)


def print_fields(document: Mapping[str, Any]) -> None:
    """One document as `field  value` lines."""
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in document.items():
        table.add_row(key, cell(value))
    console().print(table)
