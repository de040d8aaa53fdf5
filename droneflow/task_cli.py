"""`droneflow submit`, `droneflow tasks get | list | cancel` and `droneflow results get`.

Submitting is one REST call, so that a refusal comes back at once with the server's detail.
With `--wait` the application WebSocket (AppClient) is opened before that call, so that it
sees every status change of the task as it happens, and it catches up by itself after a
dropped connection."""

import contextlib
import json
import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import quote

import typer

from droneflow import output
from droneflow.client import AppClient, RequestFailed, TaskUpdate
from droneflow.remote import (
    DEFAULT_URL,
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    JsonOption,
    Remote,
    TokenOption,
    UrlOption,
    fail,
    reported,
    run,
)
from shared.lifecycle import TaskStatus
from shared.models import DEFAULT_PRIORITY

CONNECT_WAIT_S: Final = 30.0
TASK_COLUMNS: Final = ("TASK ID", "APP", "DRONE", "TYPE", "STATUS", "PRIORITY", "UPDATED")
TASK_FIELDS: Final = (
    "task_id",
    "app_id",
    "drone_id",
    "task_type",
    "status",
    "priority",
    "updated_at",
)

tasks_app = typer.Typer(help="Look up, list and cancel tasks.", no_args_is_help=True)
results_app = typer.Typer(help="Look up results.", no_args_is_help=True)

TaskIdArgument = Annotated[str, typer.Argument(metavar="TASK_ID", show_default=False)]


def register(app: typer.Typer) -> None:
    app.command(help=SUBMIT_HELP)(submit)
    app.add_typer(tasks_app, name="tasks")
    app.add_typer(results_app, name="results")


SUBMIT_HELP: Final = f"""Submit a task and print its id.

`droneflow submit --app App001 --drone Drone001 --type survey --input '{{"area": "A1"}}'`

--input takes JSON, `@file.json` or `-` (standard input). With --wait it shows each status
change on stderr until the task ends, then prints the result data (with --json: the result
document of GET /api/processing-results/ID, or the task document if it did not complete).
Without --wait, --json prints the REST answer to the submission. With tokens on, --wait
follows the task on the application's socket, which takes the application's own token.

{EXIT_CODES_HELP}"""


def submit(
    app_id: Annotated[str, typer.Option("--app", help="your application id", show_default=False)],
    drone_id: Annotated[
        str, typer.Option("--drone", help="the drone to run it", show_default=False)
    ],
    task_type: Annotated[str, typer.Option("--type", help="the task type", show_default=False)],
    input_: Annotated[
        str,
        typer.Option("--input", metavar="JSON|@FILE|-", help="the input data, a JSON object"),
    ] = "{}",
    priority: Annotated[int, typer.Option(help="1 (lowest) to 5")] = DEFAULT_PRIORITY,
    wait: Annotated[bool, typer.Option("--wait", help="follow the task until it ends")] = False,
    timeout_s: Annotated[
        float | None,
        typer.Option(help="seconds a drone may work on it before it is retried", min=0),
    ] = None,
    ttl_s: Annotated[
        float | None, typer.Option(help="seconds it may wait for a drone before expiring", min=0)
    ] = None,
    max_attempts: Annotated[int | None, typer.Option(help="deliveries before it fails")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="submitting again with the same key makes no second task")
    ] = None,
    json_: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    remote = Remote(url, token)
    with reported(remote):
        input_data = _read_input(input_)
    body: dict[str, Any] = {
        "app_id": app_id,
        "drone_id": drone_id,
        "task_type": task_type,
        "input_data": input_data,
        "priority": priority,
    }
    options = {
        "timeout_s": timeout_s,
        "ttl_s": ttl_s,
        "max_attempts": max_attempts,
        "idempotency_key": idempotency_key,
    }
    body.update({key: value for key, value in options.items() if value is not None})
    if not wait:
        answer = run(remote, remote.post("/api/processing-tasks", body))
        if json_:
            output.print_json(answer)
        else:
            typer.echo(answer["task_id"])
        return
    # What ends the wait is reported below as one line; the SDK's own log of it would repeat it.
    logging.getLogger("droneflow.client").setLevel(logging.CRITICAL)
    created: dict[str, Any] = {}
    try:
        exit_code = run(remote, _submit_and_follow(remote, body, json_, created))
    except KeyboardInterrupt:
        if "task_id" not in created:
            raise typer.Exit(EXIT_INTERRUPTED) from None  # before the task existed
        sys.stderr.write(
            "droneflow: stopped waiting; the task goes on: "
            f"droneflow tasks get {created['task_id']}\n"
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    raise typer.Exit(exit_code)


def _read_input(text: str) -> dict[str, Any]:
    source = "--input"
    if text == "-":
        text, source = sys.stdin.read(), "standard input"
    elif text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text()
        except OSError as exc:
            fail(f"--input: cannot read {path}: {exc.strerror or exc}", EXIT_USAGE)
        except UnicodeDecodeError:
            fail(f"--input: {path} is not UTF-8 text", EXIT_USAGE)
        source = str(path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{source} is not valid JSON: {exc}", EXIT_USAGE)
    if not isinstance(document, dict):
        fail(f"{source} must be a JSON object, not {type(document).__name__}", EXIT_USAGE)
    return document


async def _submit_and_follow(
    remote: Remote, body: dict[str, Any], as_json: bool, created: dict[str, Any]
) -> int:
    """Submit, show the task's changes until it ends; the exit code its final state calls for.
    `created` receives the server's answer to the submission as soon as there is one."""
    await remote.get("/healthz")  # an absent server is reported now, not after a long wait
    errors = output.console(stderr=True)
    async with AppClient(remote.url, body["app_id"], remote.token) as client:
        # Connected before the task exists, so that every change of it reaches the client.
        try:
            await client.wait_connected(wait_s=CONNECT_WAIT_S)
        except TimeoutError:
            fail(
                f"the application socket of {remote.url} did not open in {CONNECT_WAIT_S:g} s "
                "(a proxy that does not pass WebSockets?)",
                EXIT_UNREACHABLE,
            )
        created.update(await remote.post("/api/processing-tasks", body))
        task_id = created["task_id"]
        if not as_json:
            typer.echo(task_id)  # now, to be copied while the task runs
        handle = await client.watch(task_id)
        if not handle.history:
            errors.print(f"pending  waiting for drone {body['drone_id']}")
        spinner = (
            errors.status(f"{task_id}: {handle.status or 'pending'}")
            if errors.is_terminal
            else contextlib.nullcontext()
        )
        with spinner as status:
            async for update in handle.updates():
                errors.print(_describe(update))
                if status is not None:
                    status.update(f"{task_id}: {update.status}")
    final = handle.history[-1]
    if final.status == "completed":
        result = await remote.get(f"/api/processing-results/{quote(task_id)}")
        output.print_json(result if as_json else result["result_data"])
        return EXIT_OK
    if as_json:
        output.print_json(await remote.get(f"/api/processing-tasks/{quote(task_id)}"))
    reason = f"{final.error_code}: {final.error_message}" if final.error_code else final.status
    sys.stderr.write(f"droneflow: task {task_id} {final.status} ({reason})\n")
    return EXIT_FAILED


def _describe(update: TaskUpdate) -> str:
    parts = [update.timestamp or "", update.status]
    if update.drone_id:
        parts.append(f"drone {update.drone_id}")
    progress = update.additional_data.get("progress")
    if isinstance(progress, int | float):
        parts.append(f"{progress:g}%")
    if update.error_code:
        parts.append(f"{update.error_code}: {update.error_message or ''}")
    return "  ".join(part for part in parts if part)


# --- tasks ------------------------------------------------------------------------------------


@tasks_app.command("get")
def get_task(
    task_id: TaskIdArgument,
    json_: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """One task: `droneflow tasks get TASK_ID`."""
    remote = Remote(url, token)
    task = run(remote, _known(remote.get(f"/api/processing-tasks/{quote(task_id)}"), task_id))
    if json_:
        output.print_json(task)
    else:
        output.print_fields(task)


@tasks_app.command("list")
def list_tasks(
    app_id: Annotated[
        str | None, typer.Option("--app", help="only this application's tasks", show_default=False)
    ] = None,
    status: Annotated[
        TaskStatus | None, typer.Option(help="only tasks in this state", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="tasks per page")] = 100,
    cursor: Annotated[
        str | None,
        typer.Option(help="the next page, as the previous one named it", show_default=False),
    ] = None,
    json_: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Tasks, most recently updated first: `droneflow tasks list --app App001 --status failed`.

    With --json it prints the page as GET /api/processing-tasks returns it; its next_cursor,
    given to --cursor, reads the next page."""
    remote = Remote(url, token)
    params = {"app_id": app_id, "status": status, "limit": limit, "cursor": cursor}
    page = run(remote, remote.get("/api/processing-tasks", params))
    if json_:
        output.print_json(page)
        return
    rows = [[task.get(field) for field in TASK_FIELDS] for task in page["tasks"]]
    output.print_table(TASK_COLUMNS, rows)
    if page.get("next_cursor"):
        sys.stderr.write(f"more tasks: the same command with --cursor {page['next_cursor']}\n")


@tasks_app.command("cancel")
def cancel_task(
    task_id: TaskIdArgument,
    json_: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Cancel a task that has not ended: `droneflow tasks cancel TASK_ID`."""
    remote = Remote(url, token)
    path = f"/api/processing-tasks/{quote(task_id)}/cancel"
    cancelled = run(remote, _known(remote.post(path), task_id))
    if json_:
        output.print_json(cancelled)
    else:
        typer.echo(f"cancelled {cancelled['task_id']}")


# --- results ----------------------------------------------------------------------------------


@results_app.command("get")
def get_result(
    task_id: TaskIdArgument,
    json_: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """The result of a task: `droneflow results get TASK_ID`."""
    remote = Remote(url, token)
    path = f"/api/processing-results/{quote(task_id)}"
    result = run(remote, _known(remote.get(path), task_id, "no result for task {} (yet)"))
    if json_:
        output.print_json(result)
    else:
        output.print_fields(result)


async def _known(call: Coroutine[Any, Any, Any], task_id: str, missing: str = "no task {}") -> Any:
    """The call's answer; a 404 names the task, a 409 says it already ended."""
    try:
        return await call
    except RequestFailed as exc:
        if exc.status == 404:
            fail(missing.format(task_id), EXIT_FAILED)
        if exc.status == 409:
            fail(f"task {task_id} already ended: {exc.detail}", EXIT_FAILED)
        raise
