"""The authorization table, end to end on one embedded server with tokens on: every row of
tests/authz_table.py is a case here. (tests/distributed/test_auth_cluster.py runs the same
table across gateway, dispatcher and result-writer processes.)"""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from droneflow.runner import run_embedded
from tests.authz_table import CASES, Case, World, build_world, run_case, write_key_pair
from tests.e2e.conftest import embedded_settings, wait_ready

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp: Path = tmp_path_factory.mktemp("authz")
    keys, private_key_file, _ = write_key_pair(tmp / "keys")
    settings = embedded_settings(tmp, auth="token", auth_private_key_file=private_key_file)
    stop = asyncio.Event()
    server = asyncio.create_task(run_embedded(settings, stop))
    base = f"http://127.0.0.1:{settings.port}"
    try:
        await wait_ready(base)
        yield await build_world(base, f"ws://127.0.0.1:{settings.port}", keys)
    finally:
        stop.set()
        await asyncio.wait_for(server, 20)


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_authorization_table(world: World, case: Case) -> None:
    assert await run_case(world, case) == case.expected
