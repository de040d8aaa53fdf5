"""A private RabbitMQ node for tests that fault the broker (stop its app, raise its memory alarm)
without touching the node that other tests and other people share.

The node runs from the installed server's scripts with its own name, ports, data, logs, config
(no plugins, so no clash with the shared node's management or Prometheus listeners) and its own
Erlang cookie (HOME is its folder). It is stopped and its folder removed at the end."""

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.clients import free_port

STARTUP_TIMEOUT_S = 120
# The Debian wrappers in /usr/sbin switch to the rabbitmq user, who cannot read a private folder.
SCRIPTS = Path("/usr/lib/rabbitmq/bin")
DEFAULT_WATERMARK = "0.4"


def _script(name: str) -> str | None:
    candidate = SCRIPTS / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def available() -> bool:
    return _script("rabbitmq-server") is not None and _script("rabbitmqctl") is not None


@dataclass
class RabbitMQNode:
    folder: Path
    name: str
    port: int
    dist_port: int

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.folder),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_PID_FILE": str(self.folder / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def ctl(self, *args: str, timeout_s: float = STARTUP_TIMEOUT_S) -> str:
        command = [_script("rabbitmqctl") or "rabbitmqctl", "-n", self.name, *args]
        done = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> None:
        (self.folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (self.folder / "enabled_plugins").write_text("[].\n")
        (self.folder / "rabbitmq-env.conf").write_text("")
        server = _script("rabbitmq-server") or "rabbitmq-server"
        subprocess.run([server, "-detached"], env=self.env, check=True, capture_output=True)
        # await_startup fails at once until the node has registered with epmd, and rabbitmqctl
        # itself (a fresh Erlang VM) can take many seconds on a loaded machine: retry until the
        # deadline.
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                self.ctl("await_startup", "--timeout", "10", timeout_s=40)
                return
            except (RuntimeError, subprocess.TimeoutExpired):
                continue
        raise RuntimeError(f"private RabbitMQ {self.name} did not start (see {self.folder}/log)")

    def stop(self) -> None:
        try:
            self.ctl("stop", timeout_s=30)
        except (RuntimeError, subprocess.TimeoutExpired):
            pid_file = self.folder / "rabbitmq.pid"
            if pid_file.exists():
                with contextlib.suppress(ValueError, ProcessLookupError):
                    os.kill(int(pid_file.read_text().strip()), 9)

    # --- faults ---------------------------------------------------------------------------
    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup")

    def raise_memory_alarm(self) -> None:
        # A watermark of 0 sets the alarm off at once: every publishing connection is blocked.
        self.ctl("set_vm_memory_high_watermark", "0")

    def clear_memory_alarm(self) -> None:
        self.ctl("set_vm_memory_high_watermark", DEFAULT_WATERMARK)


@contextlib.contextmanager
def private_rabbitmq() -> Iterator[RabbitMQNode]:
    folder = Path(tempfile.mkdtemp(prefix="droneflow-rabbitmq-"))
    node = RabbitMQNode(folder, f"df{uuid.uuid4().hex[:8]}@localhost", free_port(), free_port())
    try:
        node.start()
        yield node
    finally:
        node.stop()
        shutil.rmtree(folder, ignore_errors=True)
