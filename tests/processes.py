"""droneflow services as real subprocesses, for tests that kill and restart them."""

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.e2e.clients import free_port

READY_TIMEOUT_S = 30.0


@dataclass
class ServiceProcess:
    """One `droneflow <command>`; gateways answer /healthz, the others /metrics when ready."""

    command: str
    env: dict[str, str]
    log_dir: Path
    name: str = ""
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.name = self.name or self.command

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def serves_http(self) -> bool:
        return self.command in ("serve", "gateway")

    async def start(self) -> None:
        env = {**os.environ, **self.env}
        argv = [sys.executable, "-m", "droneflow.cli", self.command]
        if self.serves_http:
            argv += ["--port", str(self.port)]
        else:
            env["DRONEFLOW_METRICS_PORT"] = str(self.port)
        self.starts += 1
        log = (self.log_dir / f"{self.name}.{self.starts}.log").open("wb")
        # Popen returns as soon as the child exists; readiness is awaited below.
        self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: ASYNC220
        log.close()
        await self.wait_ready()

    async def wait_ready(self) -> None:
        path = "/healthz" if self.serves_http else "/metrics"
        async with (
            httpx.AsyncClient(base_url=self.base_url) as client,
            asyncio.timeout(READY_TIMEOUT_S),
        ):
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.process.returncode}: see {self.log_dir}"
                    )
                try:
                    if (await client.get(path)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)

    async def task_stacks(self, timeout_s: float = 10.0) -> str:
        """Where each of its asyncio tasks waits (SIGUSR1; droneflow.startup), from its log."""
        if self.process is None or self.process.poll() is not None:
            return f"{self.name}: not running\n"
        log = self.log_dir / f"{self.name}.{self.starts}.log"
        before = len(log.read_bytes())
        self.process.send_signal(signal.SIGUSR1)
        async with asyncio.timeout(timeout_s):
            while b" asyncio tasks\n" not in (dump := log.read_bytes()[before:]):  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # a log file sends no event
        return f"--- {self.name}\n{_our_stacks(dump.decode(errors='replace'))}"

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout_s: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def ensure_dead(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@dataclass
class Cluster:
    gateways: list[ServiceProcess]
    dispatchers: list[ServiceProcess]
    writers: list[ServiceProcess]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def services(self) -> list[ServiceProcess]:
        return [*self.gateways, *self.dispatchers, *self.writers]

    @property
    def ws_urls(self) -> list[str]:
        return [g.ws_url for g in self.gateways]

    async def start(self) -> None:
        for service in self.services:
            await service.start()

    def stop(self) -> None:
        for service in self.services:
            try:
                service.terminate()
            finally:
                service.ensure_dead()

    @classmethod
    def of(
        cls,
        env: dict[str, str],
        logs: Path,
        gateways: int = 1,
        dispatchers: int = 1,
        writers: int = 1,
    ) -> "Cluster":
        """Not started yet. Each service logs to `logs`/<kind><n>.<start>.log."""
        logs.mkdir(exist_ok=True)
        return cls(
            gateways=[ServiceProcess("gateway", env, logs, f"gateway{i}") for i in range(gateways)],
            dispatchers=[
                ServiceProcess("dispatcher", env, logs, f"dispatcher{i}")
                for i in range(dispatchers)
            ],
            writers=[
                ServiceProcess("result-writer", env, logs, f"writer{i}") for i in range(writers)
            ],
            env=env,
        )


def cluster_env(rabbitmq_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "DRONEFLOW_BROKER_URL": rabbitmq_url,
        "DRONEFLOW_STORE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
        "DRONEFLOW_QUEUE_PREFIX": f"t{uuid.uuid4().hex[:10]}",
        "DRONEFLOW_SWEEP_INTERVAL_S": "0.5",
        "DRONEFLOW_DISPATCH_GRACE_S": "2",
        "DRONEFLOW_LOG_LEVEL": "warning",
        "DRONEFLOW_AUTH": "disabled",  # gateways default to tokens; tests/e2e/test_auth*.py
        **extra,
    }


OUR_PACKAGES = ("/shared/", "/gateway/", "/dispatcher/", "/result_writer/", "/droneflow/")


def _our_stacks(dump: str) -> str:
    """The stacks that pass through droneflow's code: a gateway runs a task per socket, and a
    failed test's message must stay readable."""
    stacks, count = dump.rstrip("\n").rsplit("\n", 1)  # the last line: "N asyncio tasks"
    blocks = (stacks + "\n").split("Stack for ")
    ours = [b for b in blocks[1:] if any(package in b for package in OUR_PACKAGES)]
    return "".join("Stack for " + block for block in ours) + count + "\n"
