"""Starting a service: settings, logging, the run until SIGTERM or SIGINT, and the exit code.

A start that cannot work ends with one line on stderr, `droneflow: error: …`, naming the setting
to change, and one of the codes in EXIT_CODES_HELP; never with a traceback. Only a bug still
shows one (exit 1).
"""

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Final
from urllib.parse import urlsplit

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from shared.errors import TRANSIENT_ERRORS, CannotListen, ConfigurationError
from shared.logs import configure_logging
from shared.settings import Settings

Runner = Callable[[Settings, asyncio.Event], Awaitable[None]]

RUNNERS: Final = {
    "serve": "run_embedded",
    "gateway": "run_gateway",
    "dispatcher": "run_dispatcher",
    "result-writer": "run_result_writer",
}
"""Each service's function in droneflow.runner, imported only when a service starts: the CLI's
client commands import this module's help and start faster without the server's libraries."""

EXIT_STOPPED: Final = 0
EXIT_CONFIGURATION: Final = 2
EXIT_CANNOT_LISTEN: Final = 3
EXIT_UNREACHABLE: Final = 4
EXIT_CODES_HELP: Final = f"""Exit codes of serve, gateway, dispatcher and result-writer:

* {EXIT_STOPPED}: stopped by SIGTERM or SIGINT (Ctrl-C)
* 1: a bug: an unexpected error, with its traceback
* {EXIT_CONFIGURATION}: configuration: a bad DRONEFLOW_* value or option, or settings that cannot
  work together (such as a lone service on DRONEFLOW_BROKER_URL=memory://)
* {EXIT_CANNOT_LISTEN}: could not listen: a port in use (DRONEFLOW_PORT, DRONEFLOW_METRICS_PORT),
  or an address that is not this machine's
* {EXIT_UNREACHABLE}: `serve` could not open its store or broker (the distributed services retry)"""


def load_settings(overrides: Mapping[str, object]) -> Settings | None:
    """Settings from DRONEFLOW_* and `overrides` (--host, --port: they win), or None once each
    bad value has been named on stderr (exit with EXIT_CONFIGURATION then)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        for error in exc.errors():
            _say(setting_problem(error, overrides))
        return None


def run_service(command: str, overrides: Mapping[str, object]) -> int:
    """Runs `command` ("serve", "gateway", "dispatcher" or "result-writer") until SIGTERM or
    SIGINT; returns the exit code."""
    settings = load_settings(overrides)
    if settings is None:
        return EXIT_CONFIGURATION
    from droneflow import runner
    from droneflow.security import RedactTokens

    configure_logging(settings.log_format, settings.log_level, filters=[RedactTokens()])
    try:
        run: Runner = getattr(runner, RUNNERS[command])
        _refuse_lone_memory_broker(command, settings)
        with asyncio.Runner(loop_factory=_loop_factory()) as loop_runner:
            loop_runner.run(_run_until_signalled(run, settings))
    except ConfigurationError as exc:
        _say(str(exc))
        return EXIT_CONFIGURATION
    except CannotListen as exc:
        _say(str(exc))
        return EXIT_CANNOT_LISTEN
    except TRANSIENT_ERRORS as exc:
        what, _, setting = runner.dependency(settings, exc)
        _say(f"{runner.unreachable(settings, exc)}; set {setting} to a {what} that can be opened")
        return EXIT_UNREACHABLE
    return EXIT_STOPPED


def _say(problem: str) -> None:
    # Not a log line: it is the command's answer, in argparse's form, whatever the log format.
    print(f"droneflow: error: {problem}", file=sys.stderr, flush=True)  # noqa: T201


def _refuse_lone_memory_broker(command: str, settings: Settings) -> None:
    if command == "serve" or urlsplit(settings.broker_url).scheme != "memory":
        return
    raise ConfigurationError(
        f"`droneflow {command}` alone cannot work on DRONEFLOW_BROKER_URL={settings.broker_url}: "
        "the in-memory broker lives inside one process, so no other service would ever see "
        "its messages; run `droneflow serve` for everything in one process, or set "
        "DRONEFLOW_BROKER_URL=amqp://… (RabbitMQ) for every service"
    )


# --- a bad setting, in one line ----------------------------------------------------------------

_EXPECTED: Final = {
    "int_parsing": ("is not a valid integer", "an integer"),
    "int_from_float": ("is not a whole number", "an integer"),
    "float_parsing": ("is not a valid number", "a number"),
    "bool_parsing": ("is not true or false", "true or false"),
    "literal_error": ("is not one of the allowed values", "one of {expected}"),
    "string_pattern_mismatch": ("does not match the allowed pattern", "a value matching {pattern}"),
}
_SHOULD_BE: Final = "Input should be "
_PORTS: Final = frozenset({"port", "metrics_port"})
_SECRET_WORDS: Final = ("secret", "key")
MAX_VALUE_CHARS: Final = 60


def setting_problem(error: ErrorDetails, overrides: Mapping[str, object]) -> str:
    """One pydantic error as one line that names the environment variable (or the command
    line option) and says what to set it to."""
    field = str(error["loc"][0]) if error["loc"] else ""
    if field in overrides:
        name, assign = f"--{field.replace('_', '-')}", " "
    else:
        name, assign = f"DRONEFLOW_{field.upper()}", "="
    value = _shown(field, error["input"])
    context = {key: str(item) for key, item in (error.get("ctx") or {}).items()}
    if error["type"] in _EXPECTED:
        problem, expected = _EXPECTED[error["type"]]
        expected = expected.format(**context) if context else expected
    elif (message := error["msg"]).startswith(_SHOULD_BE):  # "… greater than or equal to 1"
        problem = f"should be {message.removeprefix(_SHOULD_BE)}"
        expected = f"a value {message.removeprefix(_SHOULD_BE)}"
    else:
        problem, expected = f"is invalid ({message})", "a valid value"
    if field in _PORTS:
        expected = "a port number (0 to 65535)"
    if not field:
        return f"the settings do not work together: {error['msg']}"
    return f"{name}{assign}{value} {problem}; set {name} to {expected}"


def _shown(field: str, value: object) -> str:
    if any(word in field for word in _SECRET_WORDS):
        return "[hidden]"
    text = str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


# --- the run ---------------------------------------------------------------------------------


async def _run_until_signalled(run: Runner, settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, print_task_stacks)
    await run(settings, stop)


def print_task_stacks() -> None:
    """On SIGUSR1: where every asyncio task waits, on stderr. faulthandler shows threads only,
    and a service that stops moving is one coroutine waiting on something that never comes."""
    tasks = asyncio.all_tasks()
    for task in tasks:
        task.print_stack(file=sys.stderr)
    sys.stderr.write(f"{len(tasks)} asyncio tasks\n")
    sys.stderr.flush()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
