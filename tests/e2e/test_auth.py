"""Tokens through real servers: every bypass is refused (REST 401/403, sockets closed with 1008
before any welcome), revocation and expiry close live sockets, origins are checked, and no
token reaches a log line. tests/unit/test_tokens.py covers the verifier alone."""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.tokens import TokenKeys
from tests.authz_table import socket_outcome, write_key_pair
from tests.e2e.clients import WsClient, result_message, task_body
from tests.e2e.conftest import Server
from tests.processes import ServiceProcess

DAY_S = 86400.0
CLOSE_WITHIN_S = 5.0


@pytest.fixture
def key_files(tmp_path: Path) -> tuple[TokenKeys, Path, Path]:
    return write_key_pair(tmp_path / "keys")


@pytest.fixture
async def secured(server_factory: Any, key_files: tuple[TokenKeys, Path, Path]) -> Server:
    """An embedded server with tokens on, signing key given as a file."""
    server: Server = await server_factory(auth="token", auth_private_key_file=key_files[1])
    return server


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _claims(sub: str = "AppA", role: str = "app", **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": sub, "role": role, "iat": now, "nbf": now, "exp": now + 3600, "jti": "x1"}
    claims.update(changes)
    return claims


def bypass_tokens(keys: TokenKeys, public_key_file: Path) -> dict[str, str | None]:
    now = time.time()
    return {
        "no token": None,
        "malformed": "not.a-jwt",
        "garbage": "Zm9v",
        "wrong signature": TokenKeys.ed25519(None, Ed25519PrivateKey.generate()).issue(
            "app", "AppA", DAY_S
        ),
        "expired": keys.issue("app", "AppA", 60, now=now - 3600),
        "not yet valid": keys.issue("app", "AppA", DAY_S, now=now + 3600),
        "alg none": _forged({"alg": "none", "typ": "JWT"}, _claims(), None),
        "HS256 with the public key as secret": _forged(
            {"alg": "HS256", "typ": "JWT"}, _claims(), public_key_file.read_bytes()
        ),
    }


BYPASSES = [
    "no token",
    "malformed",
    "garbage",
    "wrong signature",
    "expired",
    "not yet valid",
    "alg none",
    "HS256 with the public key as secret",
]


@pytest.mark.parametrize("bypass", BYPASSES)
async def test_a_bypass_token_is_refused_on_rest_and_on_sockets(
    secured: Server, key_files: tuple[TokenKeys, Path, Path], bypass: str
) -> None:
    keys, _, public_key_file = key_files
    token = bypass_tokens(keys, public_key_file)[bypass]
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}

    async with httpx.AsyncClient(base_url=secured.base_url) as http:
        listing = await http.get("/api/processing-tasks", headers=headers)
        created = await http.post(
            "/api/processing-tasks", json=task_body("AppA", "DroneA1"), headers=headers
        )
    app_socket = await socket_outcome(secured.app_ws("AppA"), headers)
    query = "" if token is None else f"?token={token}"
    drone_socket = await socket_outcome(f"{secured.drone_ws('DroneA1')}{query}")

    for response in (listing, created):
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
    # Refused before the welcome: the first thing either socket gets is the close.
    assert (app_socket, drone_socket) == ("closed 1008", "closed 1008")


async def test_a_valid_token_in_a_header_of_another_scheme_is_refused(
    secured: Server, key_files: tuple[TokenKeys, Path, Path]
) -> None:
    token = key_files[0].issue("app", "AppA", DAY_S)
    async with httpx.AsyncClient(base_url=secured.base_url) as http:
        response = await http.get("/api/processing-tasks", headers={"Authorization": token})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_drone_token_on_app_paths_and_an_app_on_another_apps_path_are_refused(
    secured: Server, key_files: tuple[TokenKeys, Path, Path]
) -> None:
    keys = key_files[0]
    drone = {"Authorization": f"Bearer {keys.issue('drone', 'DroneA1', DAY_S)}"}
    app_a = {"Authorization": f"Bearer {keys.issue('app', 'AppA', DAY_S)}"}

    async with httpx.AsyncClient(base_url=secured.base_url) as http:
        drone_posts = await http.post(
            "/api/processing-tasks", json=task_body("AppA", "DroneA1"), headers=drone
        )
        drone_lists = await http.get("/api/processing-tasks", headers=drone)
        a_posts_for_b = await http.post(
            "/api/processing-tasks", json=task_body("AppB", "DroneA1"), headers=app_a
        )
        a_lists_b = await http.get("/api/processing-tasks?app_id=AppB", headers=app_a)

    assert [r.status_code for r in (drone_posts, drone_lists, a_posts_for_b, a_lists_b)] == [
        403
    ] * 4
    assert await socket_outcome(secured.app_ws("AppA"), drone) == "closed 1008"
    assert await socket_outcome(secured.app_ws("AppB"), app_a) == "closed 1008"
    assert await socket_outcome(secured.drone_ws("DroneB1"), drone) == "closed 1008"


async def _droneflow(env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "droneflow.cli",
        *argv,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _read_logs(directory: Path, name: str) -> str:
    return "".join(path.read_text() for path in directory.glob(f"{name}.*.log"))


def cli_env(server: Server, private_key_file: Path) -> dict[str, str]:
    return {
        "DRONEFLOW_DATA_DIR": str(server.settings.data_dir),
        "DRONEFLOW_STORE_URL": server.settings.store_url,
        "DRONEFLOW_AUTH_PRIVATE_KEY_FILE": str(private_key_file),
    }


async def test_a_revoked_token_is_refused_on_rest_and_its_live_sockets_close_with_1008(
    secured: Server, key_files: tuple[TokenKeys, Path, Path]
) -> None:
    env = cli_env(secured, key_files[1])
    code, app_token, _ = await _droneflow(env, "token", "create", "--role", "app", "--id", "AppA")
    assert code == 0
    app_token = app_token.strip()
    other = key_files[0].issue("app", "AppA", DAY_S)  # same app, another token: unaffected
    headers = {"Authorization": f"Bearer {app_token}"}

    async with (
        httpx.AsyncClient(base_url=secured.base_url) as http,
        WsClient(f"{secured.app_ws('AppA')}?token={app_token}") as revoked_socket,
        WsClient(f"{secured.app_ws('AppA')}?token={other}") as kept_socket,
    ):
        await revoked_socket.wait_type("connection_established")
        await kept_socket.wait_type("connection_established")
        assert (await http.get("/api/processing-tasks", headers=headers)).status_code == 200

        # When the token is revoked (by the CLI, through the store)
        code, out, _ = await _droneflow(env, "token", "revoke", app_token)
        revoked_at = time.monotonic()
        assert code == 0 and out.startswith("revoked ")

        # Then the next request is refused, and the live socket closes within 5 s with 1008
        refused = await http.get("/api/processing-tasks", headers=headers)
        assert refused.status_code == 401
        assert "revoked" in refused.json()["detail"]
        assert await revoked_socket.wait_closed(CLOSE_WITHIN_S) == 1008
        assert time.monotonic() - revoked_at < CLOSE_WITHIN_S
        assert revoked_socket.of_type("connection_established")
        # The other token of the same app is not revoked
        await kept_socket.roundtrip_ping()
    assert await socket_outcome(f"{secured.app_ws('AppA')}?token={app_token}") == "closed 1008"


async def test_a_socket_closes_with_1008_when_its_token_expires(
    secured: Server, key_files: tuple[TokenKeys, Path, Path]
) -> None:
    token = key_files[0].issue("drone", "DroneE1", 3)
    expires_at = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["exp"]

    async with WsClient(f"{secured.drone_ws('DroneE1')}?token={token}") as drone:
        await drone.wait_type("connection_established")
        assert await drone.wait_closed(10) == 1008
        closed_at = time.time()

    assert expires_at - 0.5 <= closed_at < expires_at + 2
    # A fresh token connects again
    fresh = key_files[0].issue("drone", "DroneE1", DAY_S)
    assert await socket_outcome(f"{secured.drone_ws('DroneE1')}?token={fresh}") == "welcome"


@pytest.mark.parametrize("tokens", ["off", "on"])
async def test_a_drone_cannot_report_on_a_task_still_queued(
    server_factory: Any, key_files: tuple[TokenKeys, Path, Path], tokens: str
) -> None:
    keys, private_key_file, _ = key_files
    overrides: dict[str, object] = (
        {"auth": "token", "auth_private_key_file": private_key_file} if tokens == "on" else {}
    )
    server: Server = await server_factory(**overrides)
    app_auth = {"Authorization": f"Bearer {keys.issue('app', 'AppQ', DAY_S)}"}
    query = f"&token={keys.issue('drone', 'DroneQ1', DAY_S)}" if tokens == "on" else ""

    async with httpx.AsyncClient(base_url=server.base_url) as http:
        first, second = [
            (
                await http.post(
                    "/api/processing-tasks",
                    json=task_body("AppQ", "DroneQ1", priority=priority),
                    headers=app_auth,
                )
            ).json()["task_id"]
            for priority in (5, 1)
        ]
        async with WsClient(f"{server.drone_ws('DroneQ1', capacity=1)}{query}") as drone:
            await drone.wait_type("processing_task", task_id=first)
            # The second waits in the queue: it was never delivered, so no report on it counts
            await drone.send(
                {
                    "type": "task_status_update",
                    "data": {"task_id": second, "status": "processing"},
                }
            )
            await drone.send(result_message(second, "DroneQ1"))
            await drone.roundtrip_ping()
            errors = drone.of_type("error")
            assert [(e["code"], e["task_id"]) for e in errors] == [
                ("task_not_delivered", second)
            ] * 2
            task = (await http.get(f"/api/processing-tasks/{second}", headers=app_auth)).json()
            assert (task["status"], task["attempts"]) == ("pending", 0)
            # Once delivered, the same reports are taken
            await drone.send(result_message(first, "DroneQ1"))
            await drone.wait_type("processing_task", task_id=second)
            await drone.send(result_message(second, "DroneQ1"))
            await drone.roundtrip_ping()
            assert len(drone.of_type("error")) == 2


async def test_a_socket_from_another_origin_is_refused_tokens_on_or_off(
    server_factory: Any, key_files: tuple[TokenKeys, Path, Path]
) -> None:
    dashboard = "https://dash.example.com"
    open_server: Server = await server_factory(allowed_origins=f"{dashboard}, https://ops.example")
    secured: Server = await server_factory(
        auth="token", auth_private_key_file=key_files[1], allowed_origins=dashboard
    )
    token = key_files[0].issue("app", "AppO", DAY_S)

    for server, query in ((open_server, ""), (secured, f"?token={token}")):
        url = f"{server.app_ws('AppO')}{query}"
        own = f"http://127.0.0.1:{server.settings.port}"
        assert await socket_outcome(url, {"Origin": "https://evil.example"}) == "http 403"
        assert await socket_outcome(url, {"Origin": "null"}) == "http 403"
        assert await socket_outcome(url, {"Origin": dashboard}) == "welcome"
        assert await socket_outcome(url, {"Origin": own}) == "welcome"
        assert await socket_outcome(url) == "welcome"  # no Origin: not a browser

    # CORS follows the same list
    async with httpx.AsyncClient(base_url=open_server.base_url) as http:
        preflight = {"Access-Control-Request-Method": "POST"}
        allowed = await http.options(
            "/api/processing-tasks", headers={"Origin": dashboard, **preflight}
        )
        refused = await http.options(
            "/api/processing-tasks", headers={"Origin": "https://evil.example", **preflight}
        )
        simple = await http.get("/api/processing-tasks", headers={"Origin": dashboard})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == dashboard
    assert "access-control-allow-origin" not in refused.headers
    assert simple.headers["access-control-allow-origin"] == dashboard


async def test_no_token_reaches_the_log_even_at_debug_level(
    tmp_path: Path, key_files: tuple[TokenKeys, Path, Path]
) -> None:
    keys, private_key_file, _ = key_files
    data_dir = tmp_path / "serve-data"
    service = ServiceProcess(
        "serve",
        {
            "DRONEFLOW_DATA_DIR": str(data_dir),
            "DRONEFLOW_STORE_URL": f"sqlite:///{data_dir / 'droneflow.db'}",
            "DRONEFLOW_AUTH": "token",
            "DRONEFLOW_AUTH_PRIVATE_KEY_FILE": str(private_key_file),
            "DRONEFLOW_ALLOWED_ORIGINS": "https://dash.example.com",
            "DRONEFLOW_LOG_LEVEL": "debug",
        },
        tmp_path,
        "serve-debug",
    )
    app = keys.issue("app", "AppL", DAY_S)
    drone = keys.issue("drone", "DroneL1", DAY_S)
    wrong = keys.issue("app", "Intruder", DAY_S)
    expired = keys.issue("app", "AppL", 60, now=time.time() - 3600)
    await service.start()
    try:
        ws = service.ws_url
        outcomes = [
            await socket_outcome(f"{ws}/ws/application/AppL?token={app}"),
            await socket_outcome(f"{ws}/ws/drone/DroneL1?capacity=2&token={drone}"),
            await socket_outcome(f"{ws}/ws/application/AppL?token={wrong}"),
            await socket_outcome(f"{ws}/ws/application/AppL?token={expired}"),
            await socket_outcome(
                f"{ws}/ws/application/AppL?token={app}", {"Origin": "https://evil.example"}
            ),
            await socket_outcome(f"{ws}/ws/drone/DroneL1", {"Authorization": f"Bearer {drone}"}),
        ]
        async with httpx.AsyncClient(base_url=service.base_url) as http:
            listing = await http.get(
                f"/api/processing-tasks?token={app}", headers={"Authorization": f"Bearer {app}"}
            )
    finally:
        assert service.terminate() == 0
    assert outcomes == [
        "welcome",
        "welcome",
        "closed 1008",
        "closed 1008",
        "http 403",
        "welcome",
    ]
    assert listing.status_code == 200

    log = _read_logs(tmp_path, "serve-debug")
    # The lines are there (uvicorn's and websockets'), with the token taken out
    assert '"WebSocket /ws/application/AppL?token=[redacted]" [accepted]' in log
    assert '"WebSocket /ws/application/AppL?token=[redacted]" 403' in log
    for token in (app, drone, wrong, expired):
        for part in token.split(".")[1:]:  # the claims and the signature (the header is common)
            assert part not in log
