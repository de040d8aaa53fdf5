"""A real server keeps to its /asyncapi.json: every frame it sends is a message documented for
that socket and direction, with no field the document does not name (and every kind it can send
is seen here, so a new kind fails until it is documented), and each socket handles exactly the
message types documented as sent to it."""

from typing import Any

import httpx
import jsonschema_rs

import shared.protocol
from tests.e2e.clients import WsClient, result_message, task_body
from tests.e2e.conftest import Server

APP, DRONE = "DocApp", "DocDrone"


def sent_messages(document: dict[str, Any], channel: str) -> dict[str, dict[str, Any]]:
    """The payload schemas of what the server sends on `channel`, by frame type."""
    messages = document["operations"][f"sendTo{channel.capitalize()}"]["messages"]
    schemas: dict[str, dict[str, Any]] = {}
    for ref in messages:
        name = ref["$ref"].rsplit("/", 1)[1]
        message = document["components"]["messages"][name]
        payload = document["components"]["schemas"][message["payload"]["$ref"].rsplit("/", 1)[1]]
        schemas[message["name"]] = payload
    return schemas


def undocumented(document: dict[str, Any], channel: str, frames: list[dict[str, Any]]) -> list[str]:
    schemas = sent_messages(document, channel)
    problems: list[str] = []
    for frame in frames:
        schema = schemas.get(frame["type"])
        if schema is None:
            problems.append(f"{channel}: undocumented type {frame['type']!r}")
            continue
        validator = jsonschema_rs.validator_for({**schema, "components": document["components"]})
        problems += [
            f"{channel} {frame['type']}: {e.message}" for e in validator.iter_errors(frame)
        ]
        if extra := set(frame) - set(schema["properties"]):
            problems.append(f"{channel} {frame['type']}: undocumented fields {sorted(extra)}")
    return problems


async def submit(app: WsClient, request_id: str) -> str:
    await app.send(
        {"type": "processing_task", "request_id": request_id, "data": task_body(APP, DRONE)}
    )
    created = await app.wait_type("task_created", request_id=request_id)
    task_id: str = created["task_id"]
    return task_id


async def test_every_frame_the_server_sends_is_documented_for_its_socket(
    server: Server, http: httpx.AsyncClient
) -> None:
    document = (await http.get("/asyncapi.json")).json()
    async with WsClient(server.app_ws(APP)) as app, WsClient(server.drone_ws(DRONE, 2)) as drone:
        # Given a task that a drone works on and finishes
        await drone.wait_type("connection_established")
        finished = await submit(app, "r1")
        await drone.wait_type("processing_task", task_id=finished)
        progress = {"task_id": finished, "status": "processing", "additional_data": {"progress": 5}}
        await drone.send({"type": "task_status_update", "data": progress})
        await app.wait_type("task_status_update", task_id=finished, status="processing")
        await drone.send(result_message(finished, DRONE))
        await app.wait_type("processing_result_received", task_id=finished)
        # and one the application cancels while the drone holds it
        cancelled = await submit(app, "r2")
        await drone.wait_type("processing_task", task_id=cancelled)
        await app.send({"type": "cancel_task", "data": {"task_id": cancelled, "request_id": "c"}})
        await app.wait_type("task_cancelled", task_id=cancelled)
        await drone.wait_type("task_cancelled", task_id=cancelled)
        # and frames the server cannot use, and pings
        for client in (app, drone):
            await client.send("not json")
            await client.wait_type("error", code="invalid_json")
            await client.roundtrip_ping()
        # and a held task, when a newer connection of the drone takes over
        held = await submit(app, "r3")
        await drone.wait_type("processing_task", task_id=held)
        async with WsClient(server.drone_ws(DRONE, 2)) as newer:
            resumed = await newer.wait_type("processing_task", task_id=held)
            superseded_code = await drone.wait_closed()
            drone_frames = drone.received + newer.received

    # Then every frame is a documented message of its socket, and each kind was seen
    assert resumed["resumed"] is True
    assert undocumented(document, "application", app.received) == []
    assert undocumented(document, "drone", drone_frames) == []
    assert {f["type"] for f in app.received} == set(sent_messages(document, "application"))
    assert {f["type"] for f in drone_frames} == set(sent_messages(document, "drone"))
    assert str(superseded_code) in document["channels"]["drone"]["x-close-codes"]


def client_sent_types(document: dict[str, Any], channel: str) -> set[str]:
    messages = document["operations"][f"receiveFrom{channel.capitalize()}"]["messages"]
    return {
        document["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]["name"]
        for ref in messages
    }


async def test_each_socket_handles_exactly_the_message_types_documented_for_it(
    server: Server, http: httpx.AsyncClient
) -> None:
    """Every message type of shared.protocol is sent to both sockets (with empty data): the
    documented ones are handled (a reply other than `unknown_type`), the others refused."""
    document = (await http.get("/asyncapi.json")).json()
    every_type = sorted(
        value
        for name, value in vars(shared.protocol).items()
        if name.isupper() and isinstance(value, str) and value == name.lower()
    )
    for channel, url in [("application", server.app_ws(APP)), ("drone", server.drone_ws(DRONE))]:
        documented = client_sent_types(document, channel)
        async with WsClient(url) as client:
            await client.wait_type("connection_established")
            handled = set()
            for message_type in every_type:
                before = len(client.received)
                await client.send({"type": message_type, "data": {}})
                await client.roundtrip_ping()
                replies = client.received[before:-1]
                if not any(r.get("code") == "unknown_type" for r in replies):
                    handled.add(message_type)
        assert handled == documented, channel
