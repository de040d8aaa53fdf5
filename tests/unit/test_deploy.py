"""No Docker engine runs here, so prove the compose file against the code: every command it
runs is a CLI command, every DRONEFLOW_ variable is a setting, every file it mounts exists."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from droneflow.cli import build_parser
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
    args = build_parser().parse_args(DRONEFLOW_SERVICES[service]["command"])
    assert args.command == DRONEFLOW_SERVICES[service]["command"][0]


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
