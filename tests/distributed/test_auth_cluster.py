"""Tokens across separate processes: gateways given only the public key, the authorization
table through them, and a revocation closing a token's sockets on every gateway."""

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from tests.authz_table import CASES, build_world, run_case, write_key_pair
from tests.e2e.clients import WsClient
from tests.processes import Cluster

pytestmark = pytest.mark.distributed

CLOSE_WITHIN_S = 5.0


async def _secured_cluster(cluster_factory: object, tmp_path: Path) -> tuple[Cluster, object]:
    keys, _, public_key_file = write_key_pair(tmp_path / "keys")
    cluster: Cluster = await cluster_factory(  # type: ignore[operator]
        DRONEFLOW_AUTH="token", DRONEFLOW_AUTH_PUBLIC_KEY_FILE=str(public_key_file)
    )
    return cluster, keys


async def test_authorization_table_across_processes(
    cluster_factory: object, tmp_path: Path
) -> None:
    cluster, keys = await _secured_cluster(cluster_factory, tmp_path)
    gateway_a, gateway_b = cluster.gateways
    # REST on one gateway, sockets on the other: the rules hold whichever a client reaches
    world = await build_world(gateway_a.base_url, gateway_b.ws_url, keys)  # type: ignore[arg-type]

    mismatches = []
    for case in CASES:
        got = await run_case(world, case)
        if got != case.expected:
            mismatches.append(f"{case}: expected {case.expected!r}, got {got!r}")

    assert mismatches == []


async def test_a_revoked_token_closes_its_sockets_on_every_gateway(
    cluster_factory: object, tmp_path: Path
) -> None:
    cluster, keys = await _secured_cluster(cluster_factory, tmp_path)
    token = keys.issue("app", "AppR", 86400)  # type: ignore[attr-defined]
    jti = keys.verify(token).jti  # type: ignore[attr-defined]

    sockets = [WsClient(f"{url}/ws/application/AppR?token={token}") for url in cluster.ws_urls]
    for client in sockets:
        await client.connect()
        await client.wait_type("connection_established")
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "droneflow.cli", "token", "revoke", jti,
            env={**os.environ, **cluster.env},
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await process.wait() == 0
        revoked_at = time.monotonic()
        codes = await asyncio.gather(*(c.wait_closed(CLOSE_WITHIN_S + 1) for c in sockets))
        assert time.monotonic() - revoked_at < CLOSE_WITHIN_S
    finally:
        for client in sockets:
            await client.close()
    assert codes == [1008] * len(cluster.gateways)
