"""A real `droneflow serve` for the fuzzers, one per module: the fuzzers send thousands of
cases, and a fresh server per case would measure start-up, not the edge."""

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.tokens import TokenKeys
from tests.authz_table import write_key_pair
from tests.processes import ServiceProcess

FUZZ_EXAMPLES = int(os.environ.get("DRONEFLOW_FUZZ_EXAMPLES", "60"))
"""Cases per operation or socket kind: small in CI; raise it to hunt (35,000 found the first
six causes of 500s)."""


def _serve(tmp_path: Path, **extra: str) -> Iterator[ServiceProcess]:
    env = {
        "DRONEFLOW_DATA_DIR": str(tmp_path / "data"),
        "DRONEFLOW_STORE_URL": f"sqlite:///{tmp_path / 'data' / 'droneflow.db'}",
        "DRONEFLOW_BROKER_URL": "memory://",
        "DRONEFLOW_LOG_LEVEL": "warning",
        **extra,
    }
    server = ServiceProcess("serve", env, tmp_path)
    asyncio.run(server.start())
    try:
        yield server
    finally:
        server.ensure_dead()


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """Tokens off, as `serve` is on loopback by default."""
    yield from _serve(tmp_path_factory.mktemp("fuzz"))


@dataclass
class SecuredServer:
    server: ServiceProcess
    keys: TokenKeys


@pytest.fixture(scope="module")
def secured_fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredServer]:
    """Tokens on, so the fuzzers reach the authentication and authorization paths too."""
    tmp_path = tmp_path_factory.mktemp("fuzz-secured")
    keys, private_key_file, _ = write_key_pair(tmp_path / "keys")
    for server in _serve(
        tmp_path, DRONEFLOW_AUTH="token", DRONEFLOW_AUTH_PRIVATE_KEY_FILE=str(private_key_file)
    ):
        yield SecuredServer(server, keys)


def server_errors_logged(server: ServiceProcess) -> list[str]:
    """Lines of the server's log that say a request or frame ended in an unhandled error."""
    lines: list[str] = []
    for log in sorted(server.log_dir.glob(f"{server.name}.*.log")):
        lines += [
            line
            for line in log.read_text(errors="replace").splitlines()
            if "Exception in ASGI application" in line or line.startswith("Traceback")
        ]
    return lines
