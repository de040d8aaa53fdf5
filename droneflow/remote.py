"""What the commands that talk to a server share: --url and --token, one REST call at a time, and
the translation of every failure into one line on stderr and a documented exit code."""

import asyncio
import json
import sys
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Final, NoReturn, TypeVar
from urllib.error import URLError

import typer
from pydantic import ValidationError

from droneflow.client import ConnectionRefused, RequestFailed, TaskRejected
from droneflow.client.link import endpoints
from droneflow.client.rest import RestClient

T = TypeVar("T")

DEFAULT_URL: Final = "http://127.0.0.1:8000"

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
EXIT_REFUSED: Final = 4
EXIT_INTERRUPTED: Final = 130

EXIT_CODES_HELP: Final = f"""Exit codes:

* {EXIT_OK}: done (`submit --wait`: the task completed)
* {EXIT_FAILED}: the task failed or was cancelled, no such task or result, already finished, or
  refused for now (rate limit, too many pending)
* {EXIT_USAGE}: usage or input error, or the server rejected the request as invalid (400, 413,
  422)
* {EXIT_UNREACHABLE}: the server is unreachable, timed out, or failed (5xx)
* {EXIT_REFUSED}: the token is missing or refused (401, 403)
* {EXIT_INTERRUPTED}: interrupted (Ctrl-C) while waiting; the task goes on"""

UrlOption = Annotated[
    str,
    typer.Option(
        "--url", envvar="DRONEFLOW_URL", help="the server (http:// or https://)", show_envvar=True
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="DRONEFLOW_TOKEN",
        help="a bearer token, when the server has tokens on",
        show_envvar=True,
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="print the REST API's JSON document, for scripts")
]


class CommandFailed(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int) -> NoReturn:
    raise CommandFailed(message, exit_code)


@dataclass(frozen=True)
class Remote:
    """A server as the command line names it."""

    url: str
    token: str | None

    @property
    def http_url(self) -> str:
        try:
            return endpoints(self.url)[0]
        except ValueError as exc:
            fail(f"--url: {exc}", EXIT_USAGE)

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return await RestClient(self.http_url, self.token).call_once("GET", path, params)

    async def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return await RestClient(self.http_url, self.token).call_once("POST", path, None, body)


def run(remote: Remote, work: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; every failure becomes one line on stderr and an exit code."""
    with reported(remote):
        return asyncio.run(work)


@contextmanager
def reported(remote: Remote) -> Iterator[None]:
    try:
        yield
    except CommandFailed as exc:
        _exit(str(exc), exc.exit_code)
    except RequestFailed as exc:
        _exit(*_explain(exc, remote))
    except ConnectionRefused as exc:
        _exit(f"the server refused the connection: {exc}{_token_hint(remote)}", EXIT_REFUSED)
    except TaskRejected as exc:
        _exit(f"the server refused the task: {exc.code}: {exc.message}", EXIT_FAILED)
    except ValidationError as exc:
        _exit(f"invalid task: {_validation_summary(exc.errors())}", EXIT_USAGE)
    except (OSError, TimeoutError) as exc:
        reason = exc.reason if isinstance(exc, URLError) else exc
        _exit(f"cannot reach the server at {remote.url}: {_reason(reason)}", EXIT_UNREACHABLE)
    except ValueError as exc:  # a body that is not JSON: something else answers at that url
        _exit(f"{remote.url} did not answer like a droneflow server: {exc}", EXIT_UNREACHABLE)


def _exit(message: str, exit_code: int) -> NoReturn:
    sys.stderr.write(f"droneflow: {message}\n")
    raise typer.Exit(exit_code)


def _explain(exc: RequestFailed, remote: Remote) -> tuple[str, int]:
    detail = _detail_text(exc.detail)
    if exc.status == 401:
        if remote.token is None:
            return (
                "the server needs a token: pass --token or set DRONEFLOW_TOKEN "
                f"(HTTP 401: {detail})",
                EXIT_REFUSED,
            )
        return f"the server refused the token (HTTP 401: {detail})", EXIT_REFUSED
    if exc.status == 403:
        return f"the token may not do this (HTTP 403: {detail})", EXIT_REFUSED
    if exc.status in (400, 413, 422):
        return f"the server rejected the request (HTTP {exc.status}): {detail}", EXIT_USAGE
    if exc.status >= 500:
        return f"the server failed (HTTP {exc.status}): {detail}", EXIT_UNREACHABLE
    return f"HTTP {exc.status}: {detail}", EXIT_FAILED


def _token_hint(remote: Remote) -> str:
    return " (pass --token or set DRONEFLOW_TOKEN)" if remote.token is None else ""


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _detail_text(detail: Any) -> str:
    """FastAPI's detail: a message, or pydantic's list of errors."""
    if isinstance(detail, list) and all(isinstance(error, dict) for error in detail):
        return _validation_summary(detail)
    return detail if isinstance(detail, str) else json.dumps(detail)


def _validation_summary(errors: Any) -> str:
    parts = []
    for error in errors:
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        parts.append(f"{location}: {error.get('msg')}" if location else str(error.get("msg")))
    return "; ".join(parts)
