"""The authorization table of issue 8 as data: each case is who asks, what they do, and what
they must get. Run end to end against an embedded server (tests/e2e/test_auth_table.py) and a
distributed cluster (tests/distributed/test_auth_cluster.py).

Outcomes are short strings so that a failing case reads as a table row: an HTTP status
("200", "401", …), with the names of the tasks a listing showed ("200 a_pending"), or what a
socket saw ("welcome", "closed 1008", "error forbidden", "task_created")."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.tokens import TokenKeys
from tests.e2e.clients import WsClient, result_message, task_body

DAY_S = 86400.0

# Who: token name → (role, sub, drone patterns). NONE sends no token at all.
IDENTITIES: dict[str, tuple[str, str, tuple[str, ...] | None]] = {
    "appA": ("app", "AppA", None),
    "appA_limited": ("app", "AppA", ("DroneC*",)),
    "appB": ("app", "AppB", None),
    "droneA": ("drone", "DroneA1", None),
    "droneB": ("drone", "DroneB1", None),
    # One drone id per socket case: a reconnect that quickly takes over is not what is tested.
    "droneW": ("drone", "DroneW1", None),
    "droneV": ("drone", "DroneV1", None),
    "droneR": ("drone", "DroneR1", None),
    "admin": ("admin", "ops", None),
}
NONE = "none"


@dataclass
class World:
    """Tasks made once per server: AppA's and AppB's, pending on DroneA1 and completed by it."""

    base_url: str
    ws_url: str
    tokens: dict[str, str]
    tasks: dict[str, str] = field(default_factory=dict)

    def headers(self, who: str) -> dict[str, str]:
        return {} if who == NONE else {"Authorization": f"Bearer {self.tokens[who]}"}

    def name_of(self, task_id: str) -> str:
        return next((name for name, tid in self.tasks.items() if tid == task_id), "other")

    async def request(self, who: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            return await http.request(method, path, headers=self.headers(who), **kwargs)

    async def create(self, who: str, app_id: str, drone_id: str) -> str:
        response = await self.request(
            who, "POST", "/api/processing-tasks", json=task_body(app_id, drone_id)
        )
        assert response.status_code == 200, response.text
        task_id: str = response.json()["task_id"]
        return task_id


def mint_all(keys: TokenKeys) -> dict[str, str]:
    return {
        name: keys.issue(role, sub, DAY_S, drones)  # type: ignore[arg-type]
        for name, (role, sub, drones) in IDENTITIES.items()
    }


async def build_world(base_url: str, ws_url: str, keys: TokenKeys) -> World:
    world = World(base_url, ws_url, mint_all(keys))
    # Completed first, by DroneA1, while nothing else waits for it.
    world.tasks["a_done"] = await world.create("appA", "AppA", "DroneA1")
    world.tasks["b_done"] = await world.create("appB", "AppB", "DroneA1")
    url = f"{ws_url}/ws/drone/DroneA1?capacity=2&token={world.tokens['droneA']}"
    async with WsClient(url) as drone:
        for name in ("a_done", "b_done"):
            task_id = world.tasks[name]
            await drone.wait_type("processing_task", task_id=task_id)
            await drone.send(result_message(task_id, "DroneA1"))
        for name in ("a_done", "b_done"):
            await _until_ok(world, _result(world, name))
    world.tasks["a_pending"] = await world.create("appA", "AppA", "DroneA1")
    world.tasks["b_pending"] = await world.create("appB", "AppB", "DroneA1")
    return world


async def _until_ok(world: World, path: str) -> None:
    async with asyncio.timeout(10):
        while True:
            if (await world.request("admin", "GET", path)).status_code == 200:
                return
            await asyncio.sleep(0.05)


def _result(world: World, name: str) -> str:
    return f"/api/processing-results/{world.tasks[name]}"


# --- observing -----------------------------------------------------------------------------


def status(response: httpx.Response) -> str:
    return str(response.status_code)


def listed(world: World, response: httpx.Response, key: str) -> str:
    """The status and the names of the world's tasks a listing shows, sorted."""
    if response.status_code != 200:
        return status(response)
    ids = [item["task_id"] for item in response.json()[key]]
    names = sorted({world.name_of(task_id) for task_id in ids} - {"other"})
    return " ".join(["200", *names])


async def socket_outcome(url: str, headers: dict[str, str] | None = None) -> str:
    """What a socket sees first: the welcome, or how it was refused."""
    try:
        async with websockets.connect(url, additional_headers=headers or {}) as ws:
            try:
                first = await asyncio.wait_for(ws.recv(), 10)
            except websockets.ConnectionClosed as closed:
                return f"closed {closed.rcvd.code if closed.rcvd else 1006}"
            message = json.loads(first)
            return "welcome" if message["type"] == "connection_established" else message["type"]
    except websockets.InvalidStatus as refused:
        return f"http {refused.response.status_code}"


async def app_submits(world: World, who: str, drone_id: str) -> str:
    """An app socket of AppA submits a task: its answer (task_created or the error code)."""
    url = f"{world.ws_url}/ws/application/AppA?token={world.tokens[who]}"
    async with WsClient(url) as app:
        await app.send(
            {"type": "processing_task", "request_id": "r", "data": task_body("AppA", drone_id)}
        )
        frame = await app.wait_for(lambda f: f.get("type") in ("task_created", "error"))
    return "task_created" if frame["type"] == "task_created" else f"error {frame['code']}"


# --- the table -------------------------------------------------------------------------------

Action = Callable[[World, str], Awaitable[str]]


@dataclass(frozen=True)
class Case:
    name: str
    who: str
    action: Action
    expected: str

    def __str__(self) -> str:
        return f"{self.name} as {self.who}"


def post_task(app_id: str, drone_id: str) -> Action:
    async def act(world: World, who: str) -> str:
        body = task_body(app_id, drone_id)
        return status(await world.request(who, "POST", "/api/processing-tasks", json=body))

    return act


def get(path: str) -> Action:
    async def act(world: World, who: str) -> str:
        return status(await world.request(who, "GET", path.format(**world.tasks)))

    return act


def get_listing(path: str, key: str) -> Action:
    async def act(world: World, who: str) -> str:
        return listed(world, await world.request(who, "GET", path), key)

    return act


def cancel_fresh(owner: str) -> Action:
    """Cancel a task made for this case (cancelling is final), owned by `owner`'s app."""

    async def act(world: World, who: str) -> str:
        app_id = IDENTITIES[owner][1]
        task_id = await world.create("admin", app_id, "DroneQ9")
        return status(await world.request(who, "POST", f"/api/processing-tasks/{task_id}/cancel"))

    return act


def socket(path: str, via: str = "header") -> Action:
    async def act(world: World, who: str) -> str:
        url = f"{world.ws_url}{path}"
        if who == NONE:
            return await socket_outcome(url)
        if via == "query":
            return await socket_outcome(f"{url}?token={world.tokens[who]}")
        return await socket_outcome(url, world.headers(who))

    return act


def submit_over_socket(drone_id: str) -> Action:
    async def act(world: World, who: str) -> str:
        return await app_submits(world, who, drone_id)

    return act


async def report_on_others_task(world: World, who: str) -> str:
    """DroneR1 reports a result for a task of DroneA1 it never received."""
    url = f"{world.ws_url}/ws/drone/DroneR1?token={world.tokens[who]}"
    async with WsClient(url) as drone:
        await drone.send(result_message(world.tasks["a_pending"], "DroneR1"))
        frame = await drone.wait_type("error")
    return f"error {frame['code']}"


PENDING = "/api/processing-tasks/drone/DroneA1/pending"
RESULTS = "/api/processing-results/drone/DroneA1"
TASK = "/api/processing-tasks/{a_pending}"
RESULT = "/api/processing-results/{a_done}"


def _rows() -> list[Case]:
    rows: list[tuple[str, Action, dict[str, str]]] = [
        (
            "POST a task for AppA to DroneC1",
            post_task("AppA", "DroneC1"),
            {
                "appA": "200",
                "appA_limited": "200",
                "admin": "200",
                "appB": "403",
                "droneA": "403",
                NONE: "401",
            },
        ),
        ("POST a task for AppA to DroneX1", post_task("AppA", "DroneX1"), {"appA_limited": "403"}),
        (
            "WS submit to DroneC1",
            submit_over_socket("DroneC1"),
            {"appA": "task_created", "appA_limited": "task_created"},
        ),
        (
            "WS submit to DroneX1",
            submit_over_socket("DroneX1"),
            {"appA_limited": "error forbidden"},
        ),
        (
            "read AppA's task (DroneA1's)",
            get(TASK),
            {
                "appA": "200",
                "droneA": "200",
                "admin": "200",
                "appB": "404",
                "droneB": "404",
                NONE: "401",
            },
        ),
        (
            "read AppA's result (by DroneA1)",
            get(RESULT),
            {
                "appA": "200",
                "droneA": "200",
                "admin": "200",
                "appB": "404",
                "droneB": "404",
                NONE: "401",
            },
        ),
        (
            "DroneA1's pending tasks",
            get_listing(PENDING, "tasks"),
            {
                "droneA": "200 a_pending b_pending",
                "admin": "200 a_pending b_pending",
                "appA": "200 a_pending",
                "appB": "200 b_pending",
                "droneB": "403",
                NONE: "401",
            },
        ),
        (
            "DroneA1's results",
            get_listing(RESULTS, "results"),
            {
                "droneA": "200 a_done b_done",
                "admin": "200 a_done b_done",
                "appA": "200 a_done",
                "appB": "200 b_done",
                "droneB": "403",
                NONE: "401",
            },
        ),
        (
            "list tasks",
            get_listing("/api/processing-tasks?limit=1000", "tasks"),
            {
                "appA": "200 a_done a_pending",
                "appB": "200 b_done b_pending",
                "admin": "200 a_done a_pending b_done b_pending",
                "droneA": "403",
                NONE: "401",
            },
        ),
        (
            "list AppA's tasks",
            get_listing("/api/processing-tasks?app_id=AppA&limit=1000", "tasks"),
            {"appA": "200 a_done a_pending", "admin": "200 a_done a_pending", "appB": "403"},
        ),
        (
            "cancel AppA's task",
            cancel_fresh("appA"),
            {"appA": "200", "admin": "200", "appB": "404", "droneA": "404", NONE: "401"},
        ),
        (
            "/ws/application/AppA",
            socket("/ws/application/AppA"),
            {
                "appA": "welcome",
                "appB": "closed 1008",
                "droneA": "closed 1008",
                "admin": "closed 1008",
                NONE: "closed 1008",
            },
        ),
        (
            "/ws/application/AppA ?token=",
            socket("/ws/application/AppA", "query"),
            {"appA": "welcome"},
        ),
        (
            "/ws/drone/DroneW1",
            socket("/ws/drone/DroneW1"),
            {
                "droneW": "welcome",
                "droneA": "closed 1008",
                "appA": "closed 1008",
                "admin": "closed 1008",
                NONE: "closed 1008",
            },
        ),
        ("/ws/drone/DroneV1 ?token=", socket("/ws/drone/DroneV1", "query"), {"droneV": "welcome"}),
        (
            "report a result on a task not held",
            report_on_others_task,
            {"droneR": "error not_your_task"},
        ),
        (
            "/metrics",
            get("/metrics"),
            {"admin": "200", "appA": "403", "droneA": "403", NONE: "401"},
        ),
        (
            "/api/drones",
            get("/api/drones"),
            {"admin": "200", "appA": "403", "droneA": "403", NONE: "401"},
        ),
        ("/healthz", get("/healthz"), {NONE: "200"}),
        ("/docs", get("/docs"), {NONE: "200"}),
        ("/openapi.json", get("/openapi.json"), {NONE: "200"}),
    ]
    return [
        Case(name, who, action, expected)
        for name, action, outcomes in rows
        for who, expected in outcomes.items()
    ]


CASES = _rows()


async def run_case(world: World, case: Case) -> str:
    return await case.action(world, case.who)


def write_key_pair(directory: Path) -> tuple[TokenKeys, Path, Path]:
    """A fresh Ed25519 pair as PEM files: (keys that sign, private key file, public key file)."""
    private = Ed25519PrivateKey.generate()
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / "signing.pem", directory / "verifying.pem"
    private_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return TokenKeys.ed25519(None, private), private_path, public_path
