"""The `droneflow` command: the services, the token tool, and the commands that talk to a running
server (submit, tasks, results, drones, simulate).

Services read DRONEFLOW_* environment variables; --host and --port override them."""

import sys
from collections.abc import Sequence
from importlib.metadata import version
from typing import Annotated, Final

import typer

from droneflow import fleet_cli, task_cli, token_cli
from droneflow.remote import EXIT_CODES_HELP
from droneflow.startup import EXIT_CODES_HELP as SERVICE_EXIT_CODES_HELP
from droneflow.startup import run_service

HELP: Final = f"""A task broker between applications and drone fleets.

Run it: `droneflow serve` (everything in one process), or `gateway`, `dispatcher` and
`result-writer` as separate processes. Use it: `droneflow submit --app App001 --drone Drone001
--type survey --input '{{"area": "A1"}}' --wait`, `droneflow tasks list`, `droneflow drones`.

The commands that talk to a server take --url (DRONEFLOW_URL, default http://127.0.0.1:8000)
and --token (DRONEFLOW_TOKEN).

{EXIT_CODES_HELP}

{SERVICE_EXIT_CODES_HELP}"""

app = typer.Typer(
    name="droneflow",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    # A traceback with locals would print the token; the commands report their errors.
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(token_cli.app, name="token")
task_cli.register(app)
fleet_cli.register(app)

HostOption = Annotated[
    str | None, typer.Option(help="address to listen on (DRONEFLOW_HOST)", show_default=False)
]
PortOption = Annotated[
    int | None, typer.Option(help="port to listen on (DRONEFLOW_PORT)", show_default=False)
]


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"droneflow {version('droneflow')}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    pass


@app.command(epilog=SERVICE_EXIT_CODES_HELP)
def serve(host: HostOption = None, port: PortOption = None) -> None:
    """Everything in one process (embedded defaults: in-memory broker, SQLite)."""
    raise typer.Exit(run_service("serve", _listen_overrides(host, port)))


@app.command(epilog=SERVICE_EXIT_CODES_HELP)
def gateway(host: HostOption = None, port: PortOption = None) -> None:
    """The REST and WebSocket edge."""
    raise typer.Exit(run_service("gateway", _listen_overrides(host, port)))


@app.command(epilog=SERVICE_EXIT_CODES_HELP)
def dispatcher() -> None:
    """Route tasks to drone queues, sweep timeouts."""
    raise typer.Exit(run_service("dispatcher", {}))


@app.command("result-writer", epilog=SERVICE_EXIT_CODES_HELP)
def result_writer() -> None:
    """Store drone results, notify apps."""
    raise typer.Exit(run_service("result-writer", {}))


def _listen_overrides(host: str | None, port: int | None) -> dict[str, object]:
    return {k: v for k, v in (("host", host), ("port", port)) if v is not None}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = sys.argv[1:] if argv is None else list(argv)
        app(args=token_cli.spread_drone_patterns(args), prog_name="droneflow")
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else 0 if code is None else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
