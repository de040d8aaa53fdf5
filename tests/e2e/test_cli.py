"""`droneflow submit | tasks | results | drones | simulate | --version` as a user runs them:
subprocesses against a real `droneflow serve` on a free port, with `droneflow simulate` as the
fleet."""

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.authz_table import write_key_pair
from tests.e2e.clients import free_port
from tests.processes import ServiceProcess

DAY_S = 86400.0
CLI_TIMEOUT_S = 60


@dataclass
class Cli:
    """`droneflow …` against one server; every call is a new process."""

    url: str
    env: dict[str, str]

    def __call__(
        self, *argv: str, stdin: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "droneflow.cli", *argv],
            env={**os.environ, "DRONEFLOW_URL": self.url, **self.env, **env},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )

    def rest(self, path: str, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.get(self.url + path, headers=headers)
        response.raise_for_status()
        return response.json()


def only_line(stream: str) -> str:
    lines = stream.splitlines()
    assert len(lines) == 1, stream
    return lines[0]


def serve(tmp_path: Path, **env: str) -> ServiceProcess:
    data_dir = tmp_path / "data"
    service = ServiceProcess(
        "serve",
        {
            "DRONEFLOW_DATA_DIR": str(data_dir),
            "DRONEFLOW_STORE_URL": f"sqlite:///{data_dir / 'droneflow.db'}",
            "DRONEFLOW_BROKER_URL": "memory://",
            "DRONEFLOW_LOG_LEVEL": "warning",
            **env,
        },
        tmp_path,
    )
    asyncio.run(service.start())
    return service


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    service = serve(tmp_path_factory.mktemp("open-server"))
    try:
        yield Cli(service.base_url, {})
    finally:
        service.terminate()
        service.ensure_dead()


class Simulator:
    """`droneflow simulate` in the background; started once its drones are connected."""

    def __init__(self, cli: Cli, *argv: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "droneflow.cli", "simulate", *argv],
            env={**os.environ, "DRONEFLOW_URL": cli.url, **cli.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        for line in self.process.stderr:  # pytest-timeout guards a simulator that never says it
            if line.startswith("ready: "):
                return
        raise AssertionError(f"simulate exited with {self.process.wait()} before it was ready")

    def stop(self) -> tuple[int, str]:
        """SIGTERM, as a supervisor stops it: (exit code, stdout)."""
        self.process.send_signal(signal.SIGTERM)
        stdout, _ = self.process.communicate(timeout=CLI_TIMEOUT_S)
        return self.process.returncode, stdout

    def ensure_dead(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@pytest.fixture(scope="module")
def fleet(cli: Cli) -> Iterator[Simulator]:
    """Two drones, ok-1 and ok-2, that complete every task."""
    simulator = Simulator(
        cli, "--drones", "2", "--capacity", "2", "--work-ms", "300", "--prefix", "ok-"
    )
    try:
        yield simulator
    finally:
        simulator.ensure_dead()


def test_version_prints_the_installed_version(cli: Cli) -> None:
    shown = cli("--version")

    assert shown.returncode == 0
    assert shown.stdout == f"droneflow {version('droneflow')}\n"


def test_submit_prints_the_id_and_tasks_get_shows_the_rest_document(cli: Cli) -> None:
    # Given a task submitted for a drone that is not connected
    submitted = cli(
        "submit", "--app", "GetApp", "--drone", "Absent", "--type", "survey",
        "--input", '{"area": "[/b] :smile:"}', "--priority", "4",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    task_id = only_line(submitted.stdout)

    # When it is looked up as JSON and as a table
    as_json = cli("tasks", "get", task_id, "--json")
    as_table = cli("tasks", "get", task_id)

    # Then the JSON is the REST document, and the table shows the whole id and the state
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == cli.rest(f"/api/processing-tasks/{task_id}")
    assert json.loads(as_json.stdout)["input_data"] == {"area": "[/b] :smile:"}
    fields = dict(line.split(None, 1) for line in as_table.stdout.splitlines() if line.strip())
    assert fields["task_id"].strip() == task_id
    assert fields["status"].strip() == "pending"
    assert fields["priority"].strip() == "4"
    assert fields["input_data"].strip() == '{"area": "[/b] :smile:"}'  # data, not markup


def test_submit_wait_shows_progress_and_prints_the_result(
    cli: Cli, fleet: Simulator, tmp_path: Path
) -> None:
    # Given an input in a file, and a simulated drone that reports progress
    input_file = tmp_path / "input.json"
    input_file.write_text(json.dumps({"area": "B2", "passes": [1, 2]}))

    # When a task is submitted with --wait
    waited = cli(
        "submit", "--app", "WaitApp", "--drone", "ok-1", "--type", "survey",
        "--input", f"@{input_file}", "--wait",
    )  # fmt: skip

    # Then it exits 0 once completed, the id first, then the result data
    assert waited.returncode == 0, waited.stderr
    task_id, *result_lines = waited.stdout.splitlines()
    assert json.loads("\n".join(result_lines)) == {
        "simulated": True,
        "work_ms": 300,
        "echo": {"area": "B2", "passes": [1, 2]},
    }
    # and each change appeared as it happened: progress first, the final state last
    changes = waited.stderr.splitlines()
    assert any("processing" in line and "drone ok-1" in line and "%" in line for line in changes)
    assert "completed" in changes[-1]

    # And the stored result is the same through `results get`
    result = cli("results", "get", task_id, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == cli.rest(f"/api/processing-results/{task_id}")
    assert json.loads(result.stdout)["result_data"]["echo"] == {"area": "B2", "passes": [1, 2]}
    table = cli("results", "get", task_id)
    assert table.returncode == 0
    assert task_id in table.stdout and "ok-1" in table.stdout


def test_submit_wait_json_prints_the_result_document_only(cli: Cli, fleet: Simulator) -> None:
    waited = cli(
        "submit", "--app", "WaitApp", "--drone", "ok-2", "--type", "t", "--input", "-",
        "--wait", "--json", stdin='{"from": "stdin"}',
    )  # fmt: skip

    assert waited.returncode == 0, waited.stderr
    document = json.loads(waited.stdout)
    assert document == cli.rest(f"/api/processing-results/{document['task_id']}")
    assert document["result_data"]["echo"] == {"from": "stdin"}


def test_submit_wait_on_a_failing_task_exits_1_and_simulate_counts_it(cli: Cli) -> None:
    # Given a drone that fails every task
    simulator = Simulator(cli, "--fail-rate", "1", "--work-ms", "0", "--prefix", "doomed-")
    try:
        # When a task for it is submitted with --wait
        waited = cli("submit", "--app", "FailApp", "--drone", "doomed-1", "--type", "t", "--wait")

        # Then the command exits 1 and says why on stderr
        assert waited.returncode == 1
        task_id = only_line(waited.stdout)
        assert f"droneflow: task {task_id} failed (drone_error: simulated failure" in waited.stderr
        assert "Traceback" not in waited.stderr
        # and the simulator, stopped with SIGTERM, counts it in its one-line summary
        code, summary = simulator.stop()
        assert code == 0
        assert only_line(summary) == (
            "1 simulated drone served 1 task: 0 completed, 1 failed on purpose"
        )
    finally:
        simulator.ensure_dead()


def test_tasks_list_filters_by_app_and_status_and_pages(cli: Cli) -> None:
    # Given two tasks of one application, one of them cancelled, and one of another
    def submit(app: str) -> str:
        done = cli("submit", "--app", app, "--drone", "Absent", "--type", "t")
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    kept, cancelled, _ = submit("ListApp"), submit("ListApp"), submit("OtherApp")
    assert cli("tasks", "cancel", cancelled).returncode == 0

    # When they are listed
    as_json = cli("tasks", "list", "--app", "ListApp", "--json")
    by_status = cli("tasks", "list", "--app", "ListApp", "--status", "cancelled")
    first_page = cli("tasks", "list", "--app", "ListApp", "--limit", "1", "--json")

    # Then --json is the REST page, and the table holds the rows asked for, with whole ids
    assert as_json.returncode == 0, as_json.stderr
    page = json.loads(as_json.stdout)
    assert page == cli.rest("/api/processing-tasks?app_id=ListApp")
    assert {task["task_id"] for task in page["tasks"]} == {kept, cancelled}
    assert by_status.returncode == 0, by_status.stderr
    header, _rule, *rows = by_status.stdout.splitlines()
    assert header.split()[:5] == ["TASK", "ID", "APP", "DRONE", "TYPE"]
    assert [row.split()[:5] for row in rows] == [[cancelled, "ListApp", "Absent", "t", "cancelled"]]
    # and a page that is not the last names the next one
    next_cursor = json.loads(first_page.stdout)["next_cursor"]
    assert next_cursor is not None
    second_page = cli("tasks", "list", "--app", "ListApp", "--limit", "1", "--cursor", next_cursor)
    assert second_page.returncode == 0, second_page.stderr
    listed = {json.loads(first_page.stdout)["tasks"][0]["task_id"]}
    listed |= {row.split()[0] for row in second_page.stdout.splitlines()[2:]}
    assert listed == {kept, cancelled}
    table_first_page = cli("tasks", "list", "--app", "ListApp", "--limit", "1")
    assert "--cursor" in table_first_page.stderr


def test_tasks_cancel_cancels_once_and_unknown_tasks_exit_1(cli: Cli) -> None:
    # Given a pending task
    task_id = cli("submit", "--app", "CancelApp", "--drone", "Absent", "--type", "t").stdout.strip()

    # When it is cancelled twice
    first = cli("tasks", "cancel", task_id, "--json")
    second = cli("tasks", "cancel", task_id)

    # Then the first cancels it (the REST answer), the second says it already ended
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {
        "task_id": task_id,
        "status": "cancelled",
        "message": "Processing task cancelled",
    }
    assert cli.rest(f"/api/processing-tasks/{task_id}")["status"] == "cancelled"
    assert second.returncode == 1
    assert only_line(second.stderr).startswith(f"droneflow: task {task_id} already ended")
    # and unknown tasks, or tasks without a result, are one line and exit 1
    for argv in (("tasks", "get", "task_unknown"), ("tasks", "cancel", "task_unknown")):
        missing = cli(*argv)
        assert missing.returncode == 1
        assert only_line(missing.stderr) == "droneflow: no task task_unknown"
    no_result = cli("results", "get", task_id)
    assert no_result.returncode == 1
    assert only_line(no_result.stderr) == f"droneflow: no result for task {task_id} (yet)"


def test_drones_lists_the_fleet_and_json_is_the_rest_document(cli: Cli, fleet: Simulator) -> None:
    as_json = cli("drones", "--json")
    as_table = cli("drones")

    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    rest = cli.rest("/api/drones")
    # last_seen moves with every frame a drone sends; the rest of the document must not
    for drones in (document["drones"], rest["drones"]):
        for drone in drones:
            drone.pop("last_seen")
    assert document == rest
    assert {"ok-1", "ok-2"} <= {drone["drone_id"] for drone in document["drones"]}
    header, _rule, *rows = as_table.stdout.splitlines()
    assert header.split()[:4] == ["DRONE", "CAPACITY", "HELD", "QUEUED"]
    capacities = {row.split()[0]: row.split()[1] for row in rows}
    assert capacities["ok-1"] == capacities["ok-2"] == "2"


@pytest.mark.parametrize(
    ("input_", "message"),
    [
        ("{bad", "droneflow: --input is not valid JSON: "),
        ("[1, 2]", "droneflow: --input must be a JSON object, not list"),
        ("@/nonexistent/input.json", "droneflow: --input: cannot read /nonexistent/input.json"),
    ],
)
def test_submit_with_bad_input_says_why_and_exits_2(cli: Cli, input_: str, message: str) -> None:
    refused = cli("submit", "--app", "A", "--drone", "D", "--type", "t", "--input", input_)

    assert refused.returncode == 2
    assert refused.stdout == ""
    assert only_line(refused.stderr).startswith(message)


def test_a_task_the_server_rejects_prints_its_detail_and_exits_2(cli: Cli) -> None:
    refused = cli("submit", "--app", "bad id", "--drone", "D", "--type", "t", "--priority", "9")

    assert refused.returncode == 2
    line = only_line(refused.stderr)
    assert line.startswith("droneflow: the server rejected the request (HTTP 422): ")
    assert "app_id: String should match pattern" in line
    assert "priority: Input should be less than or equal to 5" in line


def test_an_unreachable_server_is_one_line_and_exit_3(cli: Cli) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    for argv in (
        ("tasks", "list"),
        ("drones", "--json"),
        ("submit", "--app", "A", "--drone", "D", "--type", "t", "--wait"),
        ("simulate",),
    ):
        failed = cli(*argv, "--url", nobody)
        assert failed.returncode == 3, argv
        assert only_line(failed.stderr) == (
            f"droneflow: cannot reach the server at {nobody}: Connection refused"
        )


# --- tokens on --------------------------------------------------------------------------------


@dataclass
class Tokens:
    admin: str
    app: str
    drone: str


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, Tokens]]:
    tmp_path = tmp_path_factory.mktemp("guarded-server")
    keys, private_key_file, _ = write_key_pair(tmp_path / "keys")
    service = serve(
        tmp_path, DRONEFLOW_AUTH="token", DRONEFLOW_AUTH_PRIVATE_KEY_FILE=str(private_key_file)
    )
    tokens = Tokens(
        admin=keys.issue("admin", "ops", DAY_S),
        app=keys.issue("app", "TokApp", DAY_S),
        drone=keys.issue("drone", "TokDrone", DAY_S),
    )
    try:
        yield Cli(service.base_url, {}), tokens
    finally:
        service.terminate()
        service.ensure_dead()


def test_tokens_come_from_the_option_or_the_environment(guarded: tuple[Cli, Tokens]) -> None:
    cli, tokens = guarded

    by_option = cli(
        "submit", "--app", "TokApp", "--drone", "D", "--type", "t", "--token", tokens.app
    )
    by_env = cli("tasks", "list", "--app", "TokApp", "--json", DRONEFLOW_TOKEN=tokens.app)
    fleet = cli("drones", "--json", DRONEFLOW_TOKEN=tokens.admin)

    assert by_option.returncode == 0, by_option.stderr
    assert by_env.returncode == 0, by_env.stderr
    listed = json.loads(by_env.stdout)["tasks"]
    assert by_option.stdout.strip() in {task["task_id"] for task in listed}
    assert {task["app_id"] for task in listed} == {"TokApp"}
    assert fleet.returncode == 0, fleet.stderr
    assert json.loads(fleet.stdout) == cli.rest("/api/drones", tokens.admin)


def test_a_missing_or_refused_token_is_one_line_and_exit_4(guarded: tuple[Cli, Tokens]) -> None:
    cli, tokens = guarded

    missing = cli("tasks", "list")
    refused = cli("tasks", "list", "--token", "not-a-token")
    not_admin = cli("drones", "--token", tokens.app)
    waiting = cli("submit", "--app", "TokApp", "--drone", "D", "--type", "t", "--wait")

    assert missing.returncode == refused.returncode == not_admin.returncode == 4
    assert only_line(missing.stderr).startswith(
        "droneflow: the server needs a token: pass --token or set DRONEFLOW_TOKEN (HTTP 401"
    )
    assert only_line(refused.stderr).startswith("droneflow: the server refused the token (HTTP 401")
    assert only_line(not_admin.stderr).startswith("droneflow: the token may not do this (HTTP 403")
    assert waiting.returncode == 4
    assert "pass --token or set DRONEFLOW_TOKEN" in only_line(waiting.stderr)


def test_ctrl_c_stops_waiting_and_leaves_the_task_running(cli: Cli) -> None:
    # Given `submit --wait` for a drone that is not connected, waiting
    waiting = subprocess.Popen(
        [sys.executable, "-m", "droneflow.cli", "submit", "--app", "IntApp", "--drone", "Absent",
         "--type", "t", "--wait"],
        env={**os.environ, "DRONEFLOW_URL": cli.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert waiting.stdout is not None
        assert waiting.stderr is not None
        task_id = waiting.stdout.readline().strip()  # printed once the task exists
        waited = waiting.stderr.readline()  # and this once the CLI follows it

        # When the user presses Ctrl-C
        waiting.send_signal(signal.SIGINT)
        _, stderr = waiting.communicate(timeout=CLI_TIMEOUT_S)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()

    # Then it exits 130 with one line, and the task goes on
    assert waiting.returncode == 130
    assert waited == "pending  waiting for drone Absent\n"
    assert (
        only_line(stderr)
        == f"droneflow: stopped waiting; the task goes on: droneflow tasks get {task_id}"
    )
    assert cli.rest(f"/api/processing-tasks/{task_id}")["status"] == "pending"


def test_token_create_drones_takes_the_patterns_that_follow_and_needs_one(tmp_path: Path) -> None:
    _, private_key_file, _ = write_key_pair(tmp_path / "keys")
    cli = Cli("http://unused", {
        "DRONEFLOW_DATA_DIR": str(tmp_path / "data"),
        "DRONEFLOW_AUTH_PRIVATE_KEY_FILE": str(private_key_file),
    })  # fmt: skip

    created = cli("token", "create", "--role", "app", "--drones", "A*", "B?", "--id", "TokApp")
    bare = cli("token", "create", "--role", "app", "--id", "TokApp", "--drones")
    then_option = cli("token", "create", "--role", "app", "--drones", "--id", "TokApp")

    assert created.returncode == 0, created.stderr
    claims = jwt.decode(created.stdout.strip(), options={"verify_signature": False})
    assert (claims["sub"], claims["drones"]) == ("TokApp", ["A*", "B?"])
    assert bare.returncode == then_option.returncode == 2
    assert "Option '--drones' requires an argument" in bare.stderr
    assert bare.stdout == then_option.stdout == ""


def test_simulate_and_submit_wait_with_their_own_tokens(guarded: tuple[Cli, Tokens]) -> None:
    cli, tokens = guarded
    # Given a simulated drone with its drone token
    simulator = Simulator(cli, "--id", "TokDrone", "--token", tokens.drone, "--work-ms", "0")
    try:
        # When the application submits with --wait and its own token
        waited = cli(
            "submit", "--app", "TokApp", "--drone", "TokDrone", "--type", "t", "--input",
            '{"n": 1}', "--wait", DRONEFLOW_TOKEN=tokens.app,
        )  # fmt: skip

        # Then the task completes through both authenticated sockets
        assert waited.returncode == 0, waited.stderr
        _, *result = waited.stdout.splitlines()
        assert json.loads("\n".join(result))["echo"] == {"n": 1}
        code, summary = simulator.stop()
        assert code == 0
        assert only_line(summary).startswith("1 simulated drone served 1 task: 1 completed")
    finally:
        simulator.ensure_dead()


def test_simulate_with_a_bad_drone_id_says_why_and_exits_2(cli: Cli) -> None:
    refused = cli("simulate", "--id", "Drone001", "--id", "not a drone id")

    assert refused.returncode == 2
    assert only_line(refused.stderr) == (
        "droneflow: 'not a drone id' is not a drone id: letters, digits, - and _"
    )


def test_sigusr1_prints_where_every_task_waits_and_the_service_goes_on(tmp_path: Path) -> None:
    # Given a running service
    service = serve(tmp_path)
    try:
        # When it gets SIGUSR1, as an operator sends one to a service that stopped moving
        stacks = asyncio.run(service.task_stacks())

        # Then its log shows where its tasks wait, the run itself among them
        assert "in _run_until_signalled" in stacks
        shown = stacks.count("Stack for <Task")
        total = int(stacks.rsplit("\n", 2)[-2].removesuffix(" asyncio tasks"))
        assert 1 < shown <= total
        # and it still serves
        assert httpx.get(service.base_url + "/healthz").status_code == 200
    finally:
        service.terminate()
        service.ensure_dead()
