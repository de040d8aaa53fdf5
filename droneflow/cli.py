"""`droneflow serve | gateway | dispatcher | result-writer | token`. Settings come from
DRONEFLOW_* environment variables; --host and --port override them."""

import argparse
import logging
from collections.abc import Sequence

from droneflow import token_cli
from droneflow.startup import EXIT_CODES, EXIT_CONFIGURATION, load_settings, run_service
from shared.errors import ConfigurationError

COMMANDS: dict[str, tuple[bool, str]] = {
    "serve": (True, "everything in one process (embedded defaults)"),
    "gateway": (True, "the REST and WebSocket edge"),
    "dispatcher": (False, "route tasks to drone queues, sweep timeouts"),
    "result-writer": (False, "store drone results, notify apps"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="droneflow",
        description=__doc__,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (serves_http, help_text) in COMMANDS.items():
        command = commands.add_parser(
            name,
            help=help_text,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if serves_http:
            command.add_argument("--host", help="address to listen on (DRONEFLOW_HOST)")
            command.add_argument("--port", type=int, help="port to listen on (DRONEFLOW_PORT)")
    token_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {k: v for k in ("host", "port") if (v := getattr(args, k, None)) is not None}
    if args.command != "token":
        return run_service(args.command, overrides)
    settings = load_settings(overrides)
    if settings is None:
        return EXIT_CONFIGURATION
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return token_cli.run(args, settings)
    except ConfigurationError as exc:
        logging.getLogger("droneflow").error("%s", exc)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
