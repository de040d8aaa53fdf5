"""No Docker engine runs here, so prove the compose file against the code: every command it
runs is a CLI command, every DRONEFLOW_ variable is a setting, every file it mounts exists."""

import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from droneflow.cli import app
from shared.keys import load_keys
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DRONEFLOW_SERVICES = {
    name: spec
    for name, spec in COMPOSE["services"].items()
    if spec.get("image") == "droneflow:latest"
}


def test_compose_runs_two_gateways_a_dispatcher_and_a_result_writer() -> None:
    commands = sorted(spec["command"][0] for spec in DRONEFLOW_SERVICES.values())
    assert commands == ["dispatcher", "gateway", "gateway", "result-writer"]
    assert {"rabbitmq", "mongo", "proxy"} <= set(COMPOSE["services"])


@pytest.mark.parametrize("service", sorted(DRONEFLOW_SERVICES))
def test_compose_command_is_a_droneflow_command(service: str) -> None:
    name, *options = DRONEFLOW_SERVICES[service]["command"]
    group = typer.main.get_command(app)
    command = group.commands.get(name)  # type: ignore[attr-defined]
    assert command is not None, f"no command {name!r}"
    command.make_context(name, options)  # raises on an option the command does not take


@pytest.mark.parametrize("service", sorted(DRONEFLOW_SERVICES))
def test_compose_environment_names_only_real_settings(service: str) -> None:
    fields = {f"DRONEFLOW_{name.upper()}" for name in Settings.model_fields}
    environment = DRONEFLOW_SERVICES[service]["environment"]
    assert set(environment) <= fields
    Settings(**{k.removeprefix("DRONEFLOW_").lower(): v for k, v in environment.items()})


def test_compose_mounts_and_builds_files_that_exist() -> None:
    for spec in COMPOSE["services"].values():
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    build = next(iter(DRONEFLOW_SERVICES.values()))["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).exists()


def test_compose_waits_for_healthy_backends() -> None:
    for spec in DRONEFLOW_SERVICES.values():
        assert spec["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        assert spec["depends_on"]["mongo"]["condition"] == "service_healthy"
    assert "healthcheck" in COMPOSE["services"]["rabbitmq"]
    assert "healthcheck" in COMPOSE["services"]["mongo"]


def test_dockerfile_entrypoint_is_the_cli_and_copies_every_package() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["droneflow"]' in dockerfile
    for package in ("shared", "gateway", "dispatcher", "result_writer", "droneflow"):
        assert re.search(rf"^COPY {package} ", dockerfile, re.MULTILINE), package


def test_proxy_passes_websocket_upgrades_to_both_gateways() -> None:
    nginx = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    assert "proxy_set_header Upgrade $http_upgrade" in nginx
    for gateway in ("gateway-a", "gateway-b"):
        assert gateway in COMPOSE["services"] and f"server {gateway}:8000" in nginx


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"DRONEFLOW_{name.upper()}" not in readme]
    assert missing == []


def test_compose_holds_no_credential_and_env_example_names_every_one() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "guest" not in text and "droneflow:droneflow@" not in text
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    example = (ROOT / ".env.example").read_text()
    assert used <= set(re.findall(r"^([A-Z_]+)=", example, re.MULTILINE))
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_compose_binds_the_management_ui_to_loopback_and_turns_mongo_auth_on() -> None:
    assert COMPOSE["services"]["rabbitmq"]["ports"] == ["127.0.0.1:15672:15672"]
    mongo = COMPOSE["services"]["mongo"]
    assert "--keyFile" in mongo["command"]
    assert "MONGO_INITDB_ROOT_PASSWORD" in mongo["environment"]
    for spec in DRONEFLOW_SERVICES.values():
        assert "authSource=admin" in spec["environment"]["DRONEFLOW_STORE_URL"]


def test_gateways_get_only_the_public_key_and_tokens_on() -> None:
    gateways = [s for s in DRONEFLOW_SERVICES.values() if s["command"][0] == "gateway"]
    for spec in gateways:
        environment = spec["environment"]
        assert environment["DRONEFLOW_AUTH"] == "token"
        assert "DRONEFLOW_AUTH_PUBLIC_KEY_FILE" in environment
        assert not any("PRIVATE" in name or "SECRET" in name for name in environment)
        assert spec["secrets"] == ["token_verifying_key"]


def test_proxy_terminates_tls_with_the_mounted_certificate() -> None:
    nginx = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    assert "listen 443 ssl" in nginx and "/etc/nginx/certs/tls.crt" in nginx
    assert "./deploy/nginx/certs:/etc/nginx/certs:ro" in COMPOSE["services"]["proxy"]["volumes"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_make_secrets_writes_every_secret_compose_reads(tmp_path: Path) -> None:
    # Given a copy of the files the script reads, in a tree of its own
    (tmp_path / "deploy").mkdir()
    shutil.copy(ROOT / "deploy" / "make-secrets.sh", tmp_path / "deploy")
    shutil.copy(ROOT / ".env.example", tmp_path)
    # When it runs twice
    for _ in range(2):
        subprocess.run(
            ["bash", "deploy/make-secrets.sh"], cwd=tmp_path, check=True, capture_output=True
        )
    # Then every secret file compose names exists, passwords are fresh, keys private
    for secret in COMPOSE["secrets"].values():
        assert (tmp_path / secret["file"]).is_file(), secret["file"]
    env = (tmp_path / ".env").read_text()
    assert "change-me" not in env and "MONGO_APP_PASSWORD=" in env
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    signing = tmp_path / "deploy" / "secrets" / "token-signing-key.pem"
    assert stat.S_IMODE(signing.stat().st_mode) == 0o600
    keys = load_keys(Settings(data_dir=tmp_path, auth_private_key_file=signing))
    verifier = load_keys(
        Settings(
            data_dir=tmp_path,
            auth_public_key_file=tmp_path / "deploy" / "secrets" / "token-verifying-key.pem",
        )
    )
    assert keys is not None and verifier is not None
    assert verifier.verify(keys.issue("admin", "ops", 60)).role == "admin"
    assert (tmp_path / "deploy" / "nginx" / "certs" / "tls.crt").is_file()
