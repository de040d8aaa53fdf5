"""/openapi.json types every answer: each operation's 2xx has a schema with named fields (no
bare object), each declares the error statuses its route can give, every $ref resolves, and real
answers (a finished task, its result, listings, errors) match the schemas they are declared
with. tests/fuzz/test_openapi.py checks the same for random requests."""

from typing import Any

import httpx
import jsonschema_rs

from tests.e2e.clients import WsClient, result_message, task_body
from tests.e2e.conftest import Server

APP, DRONE = "TypedApp", "TypedDrone"


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def operations(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in openapi["paths"].items()
        for method, operation in methods.items()
    ]


def declared_schema(openapi: dict[str, Any], method: str, path: str, status: int) -> Any:
    response = openapi["paths"][path][method.lower()]["responses"][str(status)]
    return response["content"]["application/json"]["schema"]


def check(openapi: dict[str, Any], method: str, path: str, response: httpx.Response) -> list[str]:
    schema = declared_schema(openapi, method, path, response.status_code)
    validator = jsonschema_rs.validator_for({**schema, "components": openapi["components"]})
    return [
        f"{method} {path} {response.status_code}: {e.message}"
        for e in validator.iter_errors(response.json())
    ]


async def test_openapi_every_operation_has_a_typed_success_answer(http: httpx.AsyncClient) -> None:
    openapi = (await http.get("/openapi.json")).json()
    assert len(operations(openapi)) >= 13
    for method, path, operation in operations(openapi):
        content = operation["responses"]["200"]["content"]
        if "text/plain" in content:  # /metrics: the Prometheus text format
            assert content["text/plain"]["schema"] == {"type": "string"}, path
            continue
        schema = content["application/json"]["schema"]
        assert set(schema) == {"$ref"}, f"{method} {path}: {schema}"
        target = resolve(openapi, schema["$ref"])
        assert target["type"] == "object" and target["properties"], f"{method} {path}"
        assert target["required"], f"{method} {path}"


async def test_openapi_every_ref_resolves(http: httpx.AsyncClient) -> None:
    openapi = (await http.get("/openapi.json")).json()
    found = refs(openapi)
    assert len(found) > 30
    for ref in found:
        assert ref.startswith("#/components/schemas/"), ref
        assert resolve(openapi, ref) is not None, ref


async def test_openapi_declares_the_error_statuses_of_each_route(http: httpx.AsyncClient) -> None:
    openapi = (await http.get("/openapi.json")).json()
    for method, path, operation in operations(openapi):
        declared = set(operation["responses"])
        expected = set()
        if path.startswith("/api/"):
            expected |= {"401", "403", "429", "503"}
        if operation.get("parameters") or "requestBody" in operation:
            expected.add("422")
        if "requestBody" in operation:
            expected.add("413")
        if "{task_id}" in path:
            expected.add("404")
        if path.endswith("/cancel"):
            expected.add("409")
        if path in ("/readyz",):
            expected.add("503")
        if path == "/metrics":
            expected |= {"401", "403"}
        assert expected <= declared, f"{method} {path}: {sorted(expected - declared)} undeclared"
        for status in declared - {"200"}:
            content = operation["responses"][status]["content"]["application/json"]
            assert content["schema"], f"{method} {path} {status}"


async def test_openapi_real_answers_match_their_declared_schemas(
    server: Server, http: httpx.AsyncClient
) -> None:
    openapi = (await http.get("/openapi.json")).json()
    # Given a finished task with its result, and a pending one
    async with WsClient(server.drone_ws(DRONE)) as drone:
        created = await http.post("/api/processing-tasks", json=task_body(APP, DRONE))
        finished = created.json()["task_id"]
        await drone.wait_type("processing_task", task_id=finished)
        await drone.send(result_message(finished, DRONE))
        async with WsClient(server.app_ws(APP)) as app:
            await app.wait_type("processing_result_received", task_id=finished)
        await http.post("/api/processing-tasks", json=task_body(APP, DRONE, priority=5))
        # When every route is asked, with answers good and bad
        tasks, results = "/api/processing-tasks", "/api/processing-results"
        asked = [
            ("GET", tasks, {"limit": 1}, {}),
            ("GET", tasks + "/{task_id}", {}, {"task_id": finished}),
            ("GET", tasks + "/{task_id}", {}, {"task_id": "task_none"}),
            ("GET", tasks + "/drone/{drone_id}/pending", {}, {"drone_id": DRONE}),
            ("GET", results + "/{task_id}", {}, {"task_id": finished}),
            ("GET", results + "/drone/{drone_id}", {}, {"drone_id": DRONE}),
            ("POST", tasks + "/{task_id}/cancel", {}, {"task_id": finished}),
            ("GET", tasks, {"cursor": "nonsense"}, {}),
            ("GET", "/api/drones", {}, {}),
            ("GET", "/api/applications", {}, {}),
            ("GET", "/api/queues", {}, {}),
            ("GET", "/healthz", {}, {}),
            ("GET", "/readyz", {}, {}),
        ]
        calls = [("POST", tasks, created)]
        for method, path, params, ids in asked:
            url = path.format(**ids)
            calls.append((method, path, await http.request(method, url, params=params)))

    # Then each answer has the status and the shape the document declares
    statuses = [response.status_code for _, _, response in calls]
    assert statuses == [200, 200, 200, 404, 200, 200, 200, 409, 422, 200, 200, 200, 200, 200]
    assert calls[1][2].json()["next_cursor"] is not None  # a page with a null field or two
    assert calls[4][2].json()["count"] == 1 and calls[6][2].json()["count"] == 1
    assert calls[9][2].json()["count"] == 1
    assert [problem for call in calls for problem in check(openapi, *call)] == []
