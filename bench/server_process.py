"""The server under test: `droneflow serve` started on a free port, or servers already running;
waiting for them to be healthy, stopping them, and the problems in their log."""

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from procfs import now


@dataclass
class Target:
    urls: list[str]  # http://host:port of each gateway; clients are dealt round-robin
    pids: list[int]  # local server processes to measure; empty when unknown
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return self.urls[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _healthy(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no env proxies
    try:
        with opener.open(url + "/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_healthy(target: Target, timeout_s: float) -> None:
    deadline = now() + timeout_s
    for url in target.urls:
        while not _healthy(url):
            if target.process is not None and target.process.poll() is not None:
                raise SystemExit(
                    f"server exited with {target.process.returncode}:\n{_log_tail(target)}"
                )
            if now() > deadline:
                raise SystemExit(f"{url}/healthz not 200 after {timeout_s:.0f} s")
            time.sleep(0.05)


def _server_command() -> list[str]:
    script = Path(sys.executable).parent / "droneflow"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "droneflow.cli"]


@contextlib.contextmanager
def started_server(args: argparse.Namespace) -> Iterator[Target]:
    """`droneflow serve` on a free port and a fresh DRONEFLOW_DATA_DIR; SIGTERM on exit."""
    data_dir = Path(tempfile.mkdtemp(prefix="droneflow-bench-"))
    port = free_port()
    env = {**os.environ, "DRONEFLOW_DATA_DIR": str(data_dir)}
    if args.broker_url:
        env["DRONEFLOW_BROKER_URL"] = args.broker_url
    if args.store_url:
        env["DRONEFLOW_STORE_URL"] = args.store_url
    env.update(getattr(args, "server_env", {}))
    log_path = data_dir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*_server_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    target = Target([f"http://127.0.0.1:{port}"], [process.pid], process, log_path)
    try:
        yield target
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if args.keep_data:
            print(f"data and server log kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def stop_server(target: Target, timeout_s: float = 30) -> tuple[int | None, float]:
    """SIGTERM, then wait; returns (exit code or None when it had to be killed, seconds)."""
    assert target.process is not None
    started = now()
    target.process.send_signal(signal.SIGTERM)
    try:
        code: int | None = target.process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        target.process.kill()
        target.process.wait()
        code = None
    return code, now() - started


def _log_tail(target: Target, lines: int = 20) -> str:
    if target.log_path is None or not target.log_path.exists():
        return ""
    return "\n".join(target.log_path.read_text(errors="replace").splitlines()[-lines:])


def log_problems(target: Target) -> list[str]:
    if target.log_path is None or not target.log_path.exists():
        return []
    words = ("WARNING", "ERROR", "CRITICAL", "Traceback")
    text = target.log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if any(word in line for word in words)]


def stop_and_report(target: Target) -> bool:
    """SIGTERM a server this run started, print how it went and its log's warnings; True when
    it exited 0. A server given by --url is left running (True)."""
    if target.process is None:
        return True
    code, took_s = stop_server(target)
    print(f"server stopped by SIGTERM in {took_s:.1f} s, exit code {code}")
    problems = log_problems(target)
    if problems:
        print(f"server log: {len(problems)} warning/error lines, first ones:")
        for line in problems[:5]:
            print(f"  {line}")
    return code == 0
