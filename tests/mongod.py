"""A throwaway MongoDB server for the test session, started from a `mongod` binary.

Used when DRONEFLOW_TEST_MONGOD names a binary (`.ci/run` provides one): the server is a one-node
replica set, as in docker-compose.yml, on a free port with its data in a temporary folder, and
is stopped when the session ends."""

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.e2e.clients import free_port

STARTUP_TIMEOUT_S = 60.0


@contextlib.contextmanager
def running_mongod(binary: str) -> Iterator[str]:
    """Yield a mongodb:// URL of a fresh one-node replica set; stop it and remove its data."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    folder = Path(tempfile.mkdtemp(prefix="droneflow-mongod-"))
    port = free_port()
    log = folder / "mongod.log"
    process = subprocess.Popen(
        [
            binary,
            "--dbpath", str(folder),
            "--bind_ip", "127.0.0.1",
            "--port", str(port),
            "--replSet", "rs0",
            "--logpath", str(log),
            "--wiredTigerCacheSizeGB", "0.25",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    try:
        client: MongoClient[dict[str, object]] = MongoClient(url, serverSelectionTimeoutMS=1000)
        with client:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            initiated = False
            while True:
                if process.poll() is not None:
                    said = process.stderr.read().decode(errors="replace") if process.stderr else ""
                    raise RuntimeError(f"mongod exited with {process.returncode}: {said} ({log})")
                try:
                    if not initiated:
                        client.admin.command(
                            "replSetInitiate",
                            {"_id": "rs0", "members": [{"_id": 0, "host": f"127.0.0.1:{port}"}]},
                        )
                        initiated = True
                    if client.admin.command("hello").get("isWritablePrimary"):
                        break
                except PyMongoError:
                    pass  # not listening yet, or still electing itself
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mongod on port {port} was not primary after "
                                       f"{STARTUP_TIMEOUT_S:.0f} s (log: {log})")  # fmt: skip
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
        shutil.rmtree(folder, ignore_errors=True)
