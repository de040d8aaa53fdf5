"""A throwaway MongoDB server for the test session, started from a `mongod` binary.

Used when DRONEFLOW_TEST_MONGOD names a binary (`.ci/run` provides one): the server is a one-node
replica set, as in docker-compose.yml, on a free port with its data in a temporary folder, and
is stopped when the session ends. Outage tests kill and restart one of their own."""

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.e2e.clients import free_port

STARTUP_TIMEOUT_S = 60.0


class MongodServer:
    """One mongod on a fixed port and folder, so that it can be killed and started again."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._initiated = False

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--dbpath", str(self.folder),
                "--bind_ip", "127.0.0.1",
                "--port", str(self.port),
                "--replSet", "rs0",
                "--logpath", str(self.folder / "mongod.log"),
                "--logappend",
                "--wiredTigerCacheSizeGB", "0.25",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        self.wait_primary()

    def wait_primary(self) -> None:
        """Until the one member is primary, initiating the replica set the first time."""
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        process = self.process
        assert process is not None
        client: MongoClient[dict[str, object]] = MongoClient(
            self.url, serverSelectionTimeoutMS=1000
        )
        with client:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while True:
                if process.poll() is not None:
                    said = process.stderr.read().decode(errors="replace") if process.stderr else ""
                    raise RuntimeError(f"mongod exited with {process.returncode}: {said}")
                try:
                    if not self._initiated:
                        client.admin.command(
                            "replSetInitiate",
                            {
                                "_id": "rs0",
                                "members": [{"_id": 0, "host": f"127.0.0.1:{self.port}"}],
                            },
                        )
                        self._initiated = True
                    if client.admin.command("hello").get("isWritablePrimary"):
                        return
                except PyMongoError:
                    pass  # not listening yet, or still electing itself
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mongod on port {self.port} was not primary after "
                        f"{STARTUP_TIMEOUT_S:.0f} s (log: {self.folder})"
                    )
                time.sleep(0.1)

    def fsync(self) -> None:
        """Every write made so far on disk, as the next journaled write of any client leaves
        them: a kill -9 after this loses none of them."""
        from pymongo import MongoClient

        client: MongoClient[dict[str, object]] = MongoClient(self.url)
        with client:
            client.admin.command("fsync")

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close_pipe()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()


@contextlib.contextmanager
def mongod_server(binary: str) -> Iterator[MongodServer]:
    folder = Path(tempfile.mkdtemp(prefix="droneflow-mongod-"))
    server = MongodServer(binary, folder)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def running_mongod(binary: str) -> Iterator[str]:
    """Yield a mongodb:// URL of a fresh one-node replica set; stop it and remove its data."""
    with mongod_server(binary) as server:
        yield server.url
