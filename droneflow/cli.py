"""`droneflow serve | gateway | dispatcher | result-writer | token`. Settings come from
DRONEFLOW_* environment variables; --host and --port override them."""

import argparse
import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence

from droneflow import runner, token_cli
from shared.errors import ConfigurationError
from shared.settings import Settings

Runner = Callable[[Settings, asyncio.Event], Awaitable[None]]

COMMANDS: dict[str, tuple[Runner, bool, str]] = {
    "serve": (runner.run_embedded, True, "everything in one process (embedded defaults)"),
    "gateway": (runner.run_gateway, True, "the REST and WebSocket edge"),
    "dispatcher": (runner.run_dispatcher, False, "route tasks to drone queues, sweep timeouts"),
    "result-writer": (runner.run_result_writer, False, "store drone results, notify apps"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="droneflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (_, serves_http, help_text) in COMMANDS.items():
        command = commands.add_parser(name, help=help_text)
        if serves_http:
            command.add_argument("--host", help="address to listen on (DRONEFLOW_HOST)")
            command.add_argument("--port", type=int, help="port to listen on (DRONEFLOW_PORT)")
    token_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {k: v for k in ("host", "port") if (v := getattr(args, k, None)) is not None}
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "token":
            return token_cli.run(args, settings)
        run, _, _ = COMMANDS[args.command]
        with asyncio.Runner(loop_factory=_loop_factory()) as loop_runner:
            loop_runner.run(_run_until_signalled(run, settings))
    except ConfigurationError as exc:
        logging.getLogger("droneflow").error("%s", exc)
        return 2
    return 0


async def _run_until_signalled(run: Runner, settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(settings, stop)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    raise SystemExit(main())
