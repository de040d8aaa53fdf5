"""`droneflow token …` and the auth modes of `serve` and `gateway`, as the operator runs them:
subprocesses with DRONEFLOW_* settings."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import jwt
import pytest

from tests.authz_table import write_key_pair
from tests.e2e.clients import free_port
from tests.processes import ServiceProcess


def droneflow(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "droneflow.cli", *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    data_dir = tmp_path / "data"
    return {
        "DRONEFLOW_DATA_DIR": str(data_dir),
        "DRONEFLOW_STORE_URL": f"sqlite:///{data_dir / 'droneflow.db'}",
        "DRONEFLOW_LOG_LEVEL": "info",
    }


def test_create_prints_the_token_alone_and_records_it_then_revoke_and_list(
    env: dict[str, str], tmp_path: Path
) -> None:
    _, private_key_file, _ = write_key_pair(tmp_path / "keys")
    env = {**env, "DRONEFLOW_AUTH_PRIVATE_KEY_FILE": str(private_key_file)}

    created = droneflow(
        env, "token", "create", "--role", "app", "--id", "App001", "--ttl", "2h",
        "--drones", "Drone0*", "Scout-?",
    )  # fmt: skip
    drone = droneflow(env, "token", "create", "--role", "drone", "--id", "Drone001")

    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert created.stdout == token + "\n"  # nothing else on stdout
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["sub"], claims["role"], claims["drones"]) == (
        "App001",
        "app",
        ["Drone0*", "Scout-?"],
    )
    assert claims["exp"] - claims["iat"] == 7200
    drone_jti = jwt.decode(drone.stdout.strip(), options={"verify_signature": False})["jti"]

    listed = droneflow(env, "token", "list")
    assert listed.returncode == 0
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["JTI", "ROLE", "ID", "DRONES", "ISSUED", "EXPIRES", "REVOKED"]
    by_jti = {row.split()[0]: row.split() for row in rows}
    assert by_jti[claims["jti"]][1:4] == ["app", "App001", "Drone0*,Scout-?"]
    assert by_jti[claims["jti"]][-1] == "-"

    # Revoke by the whole token, by a jti, and a jti this CLI never issued
    for target in (token, drone_jti, "minted-elsewhere"):
        revoked = droneflow(env, "token", "revoke", target)
        assert revoked.returncode == 0, revoked.stderr
        assert revoked.stdout.startswith("revoked ")

    rows = droneflow(env, "token", "list").stdout.splitlines()[1:]
    revoked_at = {row.split()[0]: row.split()[-1] for row in rows}
    assert set(revoked_at) == {claims["jti"], drone_jti, "minted-elsewhere"}
    assert all(value.endswith("Z") for value in revoked_at.values())


def test_create_without_a_signing_key_or_with_bad_arguments_exits_2(
    env: dict[str, str], tmp_path: Path
) -> None:
    no_key = droneflow(env, "token", "create", "--role", "app", "--id", "App001")
    _, _, public_key_file = write_key_pair(tmp_path / "keys")
    verify_only = droneflow(
        {**env, "DRONEFLOW_AUTH_PUBLIC_KEY_FILE": str(public_key_file)},
        "token", "create", "--role", "app", "--id", "App001",
    )  # fmt: skip
    drone_patterns = droneflow(
        env, "token", "create", "--role", "drone", "--id", "D1", "--drones", "x*"
    )
    bad_ttl = droneflow(env, "token", "create", "--role", "app", "--id", "A", "--ttl", "3w")

    assert no_key.returncode == 2 and no_key.stdout == ""
    assert "DRONEFLOW_AUTH_PRIVATE_KEY_FILE" in no_key.stderr
    assert verify_only.returncode == 2 and verify_only.stdout == ""
    assert drone_patterns.returncode == 2 and "--drones" in drone_patterns.stderr
    assert bad_ttl.returncode == 2 and "3w" in bad_ttl.stderr


def test_a_gateway_with_tokens_on_and_no_key_refuses_to_start(env: dict[str, str]) -> None:
    # A lone gateway on memory:// is refused too; a broker nobody listens on is not reached.
    broker = {"DRONEFLOW_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/"}
    for extra in ({}, {"DRONEFLOW_AUTH": "token"}):
        started = droneflow({**env, **broker, **extra}, "gateway", "--port", str(free_port()))
        assert started.returncode == 2
        errors = [line for line in started.stderr.splitlines() if "error" in line.lower()]
        assert len(errors) == 1
        assert "DRONEFLOW_AUTH_PUBLIC_KEY_FILE" in errors[0]
        assert "DRONEFLOW_AUTH_SECRET_FILE" in errors[0]


def _log(tmp_path: Path, name: str) -> str:
    return "".join(path.read_text() for path in tmp_path.glob(f"{name}.*.log"))


async def test_serve_on_loopback_stays_open_and_says_so_once(
    env: dict[str, str], tmp_path: Path
) -> None:
    service = ServiceProcess("serve", env, tmp_path, "open")
    await service.start()
    try:
        async with httpx.AsyncClient(base_url=service.base_url) as http:
            assert (await http.get("/api/processing-tasks")).status_code == 200
            assert (await http.get("/metrics")).status_code == 200
    finally:
        assert service.terminate() == 0
    lines = [line for line in _log(tmp_path, "open").splitlines() if "tokens are off" in line]
    assert len(lines) == 1
    assert "DRONEFLOW_AUTH=token" in lines[0]
    assert not (Path(env["DRONEFLOW_DATA_DIR"]) / "token-signing-key.pem").exists()


async def test_serve_on_every_address_turns_tokens_on_with_a_key_pair_it_keeps(
    env: dict[str, str], tmp_path: Path
) -> None:
    env = {**env, "DRONEFLOW_HOST": "0.0.0.0"}
    key_file = Path(env["DRONEFLOW_DATA_DIR"]) / "token-signing-key.pem"
    service = ServiceProcess("serve", env, tmp_path, "public")
    await service.start()
    try:
        first_key = key_file.read_bytes()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        token = droneflow(env, "token", "create", "--role", "app", "--id", "App001")
        assert token.returncode == 0, token.stderr
        auth = {"Authorization": f"Bearer {token.stdout.strip()}"}
        async with httpx.AsyncClient(base_url=service.base_url) as http:
            assert (await http.get("/api/processing-tasks")).status_code == 401
            assert (await http.get("/api/processing-tasks", headers=auth)).status_code == 200
            # The operator revokes it with the CLI: refused on the next request
            assert droneflow(env, "token", "revoke", token.stdout.strip()).returncode == 0
            assert (await http.get("/api/processing-tasks", headers=auth)).status_code == 401
        assert service.terminate() == 0
        await service.start()  # restarted: the same key, so tokens made before still verify
        fresh = droneflow(env, "token", "create", "--role", "admin", "--id", "ops").stdout.strip()
        async with httpx.AsyncClient(base_url=service.base_url) as http:
            metrics = await http.get("/metrics", headers={"Authorization": f"Bearer {fresh}"})
            assert metrics.status_code == 200
    finally:
        service.terminate()
    assert key_file.read_bytes() == first_key
    assert "tokens are off" not in _log(tmp_path, "public")


async def test_disabled_on_every_address_warns_at_every_start(
    env: dict[str, str], tmp_path: Path
) -> None:
    env = {**env, "DRONEFLOW_HOST": "0.0.0.0", "DRONEFLOW_AUTH": "disabled"}
    service = ServiceProcess("serve", env, tmp_path, "disabled")
    for _ in range(2):
        await service.start()
        try:
            async with httpx.AsyncClient(base_url=service.base_url) as http:
                assert (await http.get("/api/processing-tasks")).status_code == 200
        finally:
            assert service.terminate() == 0
    warnings = [
        line
        for line in _log(tmp_path, "disabled").splitlines()
        if "WARNING" in line and "DRONEFLOW_AUTH=disabled" in line
    ]
    assert len(warnings) == 2
