"""The Celery 5 peer of droneflow's figures: an echo task on the same RabbitMQ, closed loop.

    python bench/celery_peer.py [--amqp-url amqp://guest:guest@127.0.0.1:5672/]
                                [--inflight 100] [--tasks 5000] [--repeat 3] [--no-confirms]
                                [--concurrency 20] [--rate-per-s R]

Celery is configured as a careful user runs it (see bench/README.md, "The Celery peer"): a
worker with the threads pool, `task_acks_late`, prefetch multiplier 1, the `rpc://` result
backend, persistent task messages, and publisher confirms on (`confirm_publish`) unless
--no-confirms. The worker is a child process (`celery worker`, this module is its app); the
client is this process, one thread keeping `inflight` tasks unanswered. The CLI makes a fresh
vhost (rabbitmqctl, as in bench/distributed.py) and deletes it at the end; `run_celery_peer`
takes a URL that already names the vhost to use. Needs the `bench` extra.
"""

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from procfs import cpu_s  # noqa: E402

BROKER_ENV = "DRONEFLOW_BENCH_CELERY_BROKER_URL"
CONFIRMS_ENV = "DRONEFLOW_BENCH_CELERY_CONFIRMS"
READY_TIMEOUT_S = 60.0
STALL_S = 60.0


def make_app(broker_url: str, confirms: bool) -> Celery:
    app = Celery("celery_peer", broker=broker_url, backend="rpc://")
    app.conf.update(
        task_acks_late=True,  # ack after the task ran, as droneflow acks after the store wrote
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_transport_options={"confirm_publish": confirms},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_default_queue="celery_peer",
    )
    return app


# The worker imports this module (`celery -A celery_peer worker`) and finds `app` here.
app = make_app(os.environ.get(BROKER_ENV, "amqp://"), os.environ.get(CONFIRMS_ENV) == "1")


@app.task(name="echo")
def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


@dataclass
class PeerRun:
    tasks: int
    wall_s: float
    latencies_ms: list[float]
    cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.wall_s

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class ClosedLoop:
    """Keeps `inflight` echo tasks unanswered from one thread: results arrive as callbacks while
    the rpc backend's consumer drains, and each one sends the next task."""

    def __init__(self, client: Celery, inflight: int, rate_per_s: float | None) -> None:
        self.client = client
        self.inflight = inflight
        self.interval_s = 1 / rate_per_s if rate_per_s else 0.0
        self.sent_at: dict[str, float] = {}
        self.latencies_ms: list[float] = []
        self.to_send = 0
        self.next_send_at = 0.0
        self.last_result_at = 0.0

    def _send(self) -> None:
        self.to_send -= 1
        started = time.monotonic()
        result = self.client.send_task("echo", ({"bench_id": f"{self.to_send}-{started}"},))
        self.sent_at[result.id] = started
        result.then(self._done)
        if self.interval_s:
            self.next_send_at = max(started, self.next_send_at) + self.interval_s

    def _done(self, result: Any) -> None:
        self.last_result_at = time.monotonic()
        started = self.sent_at.pop(result.id)
        self.latencies_ms.append(1000 * (self.last_result_at - started))

    def run(self, tasks: int) -> float:
        """Sends `tasks` tasks and waits for all results; returns the wall time in seconds."""
        self.to_send, self.latencies_ms = tasks, []
        consumer = self.client.backend.result_consumer
        started = self.last_result_at = self.next_send_at = time.monotonic()
        while self.to_send or self.sent_at:
            while (
                self.to_send
                and len(self.sent_at) < self.inflight
                and time.monotonic() >= self.next_send_at
            ):
                self._send()
            wait_s = max(0.0, self.next_send_at - time.monotonic()) if self.to_send else 1.0
            with contextlib.suppress(TimeoutError):  # nothing arrived: send, or wait again
                consumer.drain_events(timeout=min(wait_s, 1.0) or 0.001)
            if time.monotonic() - self.last_result_at > STALL_S:
                raise RuntimeError(f"celery peer stalled: {len(self.sent_at)} tasks unanswered")
        return self.last_result_at - started


def start_worker(amqp_url: str, confirms: bool, concurrency: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, BROKER_ENV: amqp_url, CONFIRMS_ENV: "1" if confirms else "0"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), env.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "celery", "-A", "celery_peer", "worker"]
    argv += ["--pool", "threads", "--concurrency", str(concurrency), "--prefetch-multiplier", "1"]
    # No gossip, mingle or heartbeat events: a single worker has nobody to talk to.
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", "celery_peer"]
    argv += ["--loglevel", "WARNING"]
    return subprocess.Popen(argv, env=env, cwd=BENCH_DIR, stdout=subprocess.DEVNULL)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)  # warm shutdown: finishes the tasks it holds
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def run_celery_peer(
    amqp_url: str,
    inflight: int,
    tasks: int,
    confirms: bool = True,
    *,
    repeat: int = 3,
    warmup: int = 500,
    concurrency: int = 20,
    rate_per_s: float | None = None,
    single_tasks: int = 300,
    measure_pids: dict[str, int] | None = None,
    on_run: Callable[[int, PeerRun], None] | None = None,
) -> dict[str, Any]:
    """Runs the peer on `amqp_url` (a vhost of its own) and returns its figures: medians over
    `repeat` runs of tasks/s and p50/p99 round trip (ms), the p50 with one task in flight, and
    CPU µs/task of the worker, the client and each of `measure_pids` (e.g. RabbitMQ)."""
    worker = start_worker(amqp_url, confirms, concurrency)
    client = make_app(amqp_url, confirms)
    pids = {"celery-worker": worker.pid, "celery-client": os.getpid(), **(measure_pids or {})}
    try:
        client.send_task("echo", ({"ready": True},)).get(timeout=READY_TIMEOUT_S)
        loop = ClosedLoop(client, inflight, rate_per_s)
        if warmup:
            loop.run(warmup)
        runs = []
        for k in range(repeat):
            before = {name: cpu_s(pid) for name, pid in pids.items()}
            wall_s = loop.run(tasks)
            used = {name: cpu_s(pid) - before[name] for name, pid in pids.items()}
            runs.append(PeerRun(tasks, wall_s, loop.latencies_ms, used))
            if on_run:
                on_run(k, runs[-1])
        p50_single = float("nan")
        if single_tasks:
            single = ClosedLoop(client, 1, None)
            single.run(single_tasks)
            p50_single = statistics.median(single.latencies_ms)
    finally:
        stop_worker(worker)
        client.close()
    return {
        "confirms": confirms,
        "inflight": inflight,
        "concurrency": concurrency,
        "rate_per_s": rate_per_s,
        "tasks_per_s": statistics.median(r.tasks_per_s for r in runs),
        "p50_ms": statistics.median(r.percentile_ms(0.50) for r in runs),
        "p99_ms": statistics.median(r.percentile_ms(0.99) for r in runs),
        "single_p50_ms": p50_single,
        "cpu_us_per_task": {
            name: statistics.median(1e6 * r.cpu_s[name] / r.tasks for r in runs) for name in pids
        },
        "runs": [
            {
                "tasks_per_s": r.tasks_per_s,
                "p50_ms": r.percentile_ms(0.50),
                "p99_ms": r.percentile_ms(0.99),
            }
            for r in runs
        ],
    }


def line(result: dict[str, Any]) -> str:
    cpu = "  ".join(f"{n} {us:.0f}" for n, us in result["cpu_us_per_task"].items())
    return (
        f"celery (confirms {'on' if result['confirms'] else 'off'}, inflight"
        f" {result['inflight']}): {result['tasks_per_s']:,.0f} tasks/s  p50"
        f" {result['p50_ms']:.1f} ms  p99 {result['p99_ms']:.1f} ms | 1 in flight p50"
        f" {result['single_p50_ms']:.2f} ms | cpu µs/task: {cpu}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/", help="user and host to use")
    add("--inflight", type=int, default=100, help="unanswered tasks (default 100)")
    add("--tasks", type=int, default=5000, help="tasks per measured run (default 5000)")
    add("--warmup", type=int, default=500)
    add("--repeat", type=int, default=3)
    add("--concurrency", type=int, default=20, help="worker threads (default 20)")
    add("--rate-per-s", type=float, help="send no faster than this (default: closed loop only)")
    add("--no-confirms", action="store_true", help="publisher confirms off")
    args = parser.parse_args(argv)

    # Here, not at the top: bench/distributed.py imports this module.
    from rabbitmq_vhost import fresh_vhost, rabbitmq_pid

    with fresh_vhost(args.amqp_url) as url:
        rabbit = rabbitmq_pid()
        result = run_celery_peer(
            url,
            args.inflight,
            args.tasks,
            not args.no_confirms,
            repeat=args.repeat,
            warmup=args.warmup,
            concurrency=args.concurrency,
            rate_per_s=args.rate_per_s,
            measure_pids={"rabbitmq": rabbit} if rabbit else None,
            on_run=lambda k, r: print(
                f"celery run {k + 1}/{args.repeat}: {r.tasks_per_s:,.0f} tasks/s"
                f"  p50 {r.percentile_ms(0.5):.1f} ms  p99 {r.percentile_ms(0.99):.1f} ms",
                flush=True,
            ),
        )
    print(line(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
