"""Embedded mode with its data directory out of space: POSTs get an immediate 503 with
Retry-After and the server logs it once; once space is back POSTs succeed again, and every task
accepted before is kept.

The disk is filled for the server process alone: its file-size limit (RLIMIT_FSIZE) is lowered
to one byte while it runs, so every write that extends a file fails, as on a full disk."""

import asyncio
import resource
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.clients import free_port, task_body
from tests.processes import READY_TIMEOUT_S

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs prlimit on another process (Linux)"
)


async def _started(tmp_path_str: str, port: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "droneflow.cli", "serve", "--port", str(port),
        env={"DRONEFLOW_DATA_DIR": tmp_path_str, "PATH": "/usr/bin:/bin"},
        # A pipe, not a file: the lowered limit would make the server's log writes fail too.
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while True:
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        return process
                except httpx.TransportError:
                    await asyncio.sleep(0.05)


def _set_file_size_limit(pid: int, limit: int) -> None:
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))


async def test_full_disk_answers_503_with_retry_after_and_keeps_accepted_tasks(
    tmp_path: Path,
) -> None:
    port = free_port()
    process = await _started(str(tmp_path), port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            assert (await http.get("/readyz")).status_code == 200
            # Given 25 tasks accepted
            accepted = [
                (await http.post("/api/processing-tasks", json=task_body("DiskApp", "D1"))).json()[
                    "task_id"
                ]
                for _ in range(25)
            ]
            # When the disk is full
            _set_file_size_limit(process.pid, 1)
            started = time.monotonic()
            refused = await http.post("/api/processing-tasks", json=task_body("DiskApp", "D1"))
            # Then the POST is refused at once, saying when to retry
            assert refused.status_code == 503
            assert time.monotonic() - started < 2.0
            assert refused.headers["retry-after"].isdigit()
            # And once space is freed, POSTs succeed again
            _set_file_size_limit(process.pid, resource.RLIM_INFINITY)
            async with asyncio.timeout(5):
                while True:
                    again = await http.post(
                        "/api/processing-tasks", json=task_body("DiskApp", "D1")
                    )
                    if again.status_code == 200:
                        break
                    assert again.status_code == 503
                    await asyncio.sleep(0.1)
            # And every task accepted before the disk filled is kept
            for task_id in accepted:
                assert (await http.get(f"/api/processing-tasks/{task_id}")).status_code == 200
    finally:
        process.terminate()
        output, _ = await process.communicate()
    log = output.decode(errors="replace")
    assert "gateway: store is unavailable" in log
    assert "gateway: store is back after" in log
