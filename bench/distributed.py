"""Benchmark of the distributed deployment: its services as processes, driven by loadgen.

Separate gateway, dispatcher and result-writer processes on a fresh RabbitMQ vhost and one
shared SQLite file (or a mongod it starts, --store mongo), driven by bench/loadgen.py; prints
loadgen's figures, the CPU of every process (services, RabbitMQ, mongod) per task and the work
the services asked of RabbitMQ and mongod per task (bench/work.py), then runs the Celery peer
(bench/celery_peer.py) on the same RabbitMQ at the same in-flight count and prints the ratios,
with the p50 of one task in flight on both.

    python bench/distributed.py [--store sqlite|mongo] [--scale N] [--gateways 1]
                                [--dispatchers 1] [--writers 1] [--no-peer]
                                [--env DRONEFLOW_X=y ...] [--profile DIR] [loadgen options ...]

Needs a local RabbitMQ and `rabbitmqctl` (run as root): the vhost is created with add_vhost and
set_permissions for the AMQP user, and deleted at the end. Options it does not know go to
loadgen (`--tasks`, `--repeat`, `--apps`, ...). The services get SIGTERM at the end; the exit
status is 1 when loadgen reported a problem or a service did not exit 0. See bench/README.md.
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from loadgen import cpu_s, memory_mib  # noqa: E402
from procfs import runnable_wait_s  # noqa: E402
from rabbitmq_vhost import fresh_vhost, rabbitmq_pid  # noqa: E402
from server_process import free_port  # noqa: E402
from work import WorkTable  # noqa: E402

# The load: 20 drones, 4 apps, 100 tasks in flight. Given loadgen options win.
LOADGEN_DEFAULTS = {
    "--apps": "4",
    "--inflight": "25",
    "--drones": "20",
    "--tasks": "5000",
    "--repeat": "3",
    "--warmup": "500",
}
SINGLE_TASKS = 300  # the one-task-in-flight run

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
RUN_LINE = re.compile(r"^(warm-up:|run (\d+)/\d+: (\d+) tasks)")
# With --paced-at there are no closed-loop runs: the tables are the paced runs'.
PACED_RUN_LINE = re.compile(r"^(warm-up:|half-peak run (\d+)/\d+: (\d+) tasks)")


@dataclass
class Service:
    command: str  # gateway | dispatcher | result-writer
    name: str
    port: int  # HTTP port of a gateway, metrics port of the others
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None
    stop_s: float = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ready_path(self) -> str:
        return "/healthz" if self.command == "gateway" else "/metrics"


@dataclass
class CpuTable:
    """CPU seconds of each measured process at each run boundary that loadgen printed, and the
    seconds its threads waited for a CPU while runnable."""

    names: list[str]
    pids: list[int]
    samples: list[tuple[float, list[float]]] = field(default_factory=list)
    waits: list[list[float | None]] = field(default_factory=list)
    tasks: list[int] = field(default_factory=list)

    def sample(self) -> None:
        seconds = []
        for pid in self.pids:
            try:
                seconds.append(cpu_s(pid))
            except OSError:
                seconds.append(float("nan"))
        self.samples.append((time.monotonic(), seconds))
        self.waits.append([runnable_wait_s(pid) for pid in self.pids])

    def runs(self) -> list[tuple[float, list[float], int]]:
        """(wall s, CPU s of each process, tasks) of every measured run."""
        spans = []
        for (t0, before), (t1, after), tasks in zip(
            self.samples, self.samples[1:], self.tasks, strict=False
        ):
            spans.append((t1 - t0, [b - a for a, b in zip(before, after, strict=True)], tasks))
        return spans

    def per_task_medians(self) -> dict[str, float]:
        """Median CPU µs per task of each process over the measured runs."""
        runs = [(cpu, tasks) for _, cpu, tasks in self.runs() if tasks]
        if not runs:
            return {}
        return {
            name: statistics.median(1e6 * cpu[i] / tasks for cpu, tasks in runs)
            for i, name in enumerate(self.names)
        }

    def print(self) -> None:
        runs = self.runs()
        if not runs:
            return
        width = max(len(n) for n in self.names)
        print("cpu per process, % of one core (µs/task), each run then the median:")
        for i, name in enumerate(self.names):
            pcts = [100 * cpu[i] / wall for wall, cpu, _ in runs]
            per_task = [1e6 * cpu[i] / tasks for _, cpu, tasks in runs if tasks]
            cells = "  ".join(f"{p:5.0f}%" for p in pcts)
            print(
                f"  {name:<{width}}  {cells}  | median {statistics.median(pcts):4.0f}%"
                f" ({statistics.median(per_task):4.0f} µs/task)"
            )
        self._print_waits(width)

    def _print_waits(self, width: int) -> None:
        """On a box with fewer cores than busy threads, a thread also waits for a core; one
        waiting inside a SQLite transaction keeps the other processes' writers out."""
        spans = []
        for (t0, _), (t1, _), before, after in zip(
            self.samples, self.samples[1:], self.waits, self.waits[1:], strict=False
        ):
            spans.append(
                [
                    (b - a) / (t1 - t0) if a is not None and b is not None else None
                    for a, b in zip(before, after, strict=True)
                ]
            )
        if not spans or all(share is None for span in spans for share in span):
            return
        print("waiting for a CPU while runnable, % of the run's wall time (all threads):")
        for i, name in enumerate(self.names):
            shares = [span[i] for span in spans if span[i] is not None]
            if not shares:
                continue
            cells = "  ".join(f"{100 * share:5.0f}%" for share in shares)
            print(f"  {name:<{width}}  {cells}  | median {100 * statistics.median(shares):4.0f}%")


@contextlib.contextmanager
def mongod(binary: str | None) -> Iterator[tuple[str, int]]:
    """A fresh one-node replica set (as docker-compose.yml runs it): yields (URL of database
    `bench`, pid), stops it and removes its data at exit. The test suite's starter is reused."""
    if not binary:
        raise SystemExit("--store mongo needs --mongod or DRONEFLOW_TEST_MONGOD (a mongod binary)")
    sys.path.insert(0, str(BENCH_DIR.parent))
    from tests.mongod import mongod_server

    with mongod_server(binary) as server:
        assert server.process is not None
        url = f"mongodb://127.0.0.1:{server.port}/bench?directConnection=true"
        yield url, server.process.pid


def _server_command() -> list[str]:
    script = Path(sys.executable).parent / "droneflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "droneflow.cli"]


def start(service: Service, env: dict[str, str]) -> None:
    argv = [*_server_command(), service.command]
    if service.command == "gateway":
        argv += ["--host", "127.0.0.1", "--port", str(service.port)]
        env = {"DRONEFLOW_AUTH": "disabled", **env}  # gateways default to tokens
    else:
        env = {**env, "DRONEFLOW_METRICS_PORT": str(service.port)}
    with service.log_path.open("wb") as log:
        service.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no env proxies
    try:
        with opener.open(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_ready(services: list[Service], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for service in services:
        while not _answers(service.url + service.ready_path):
            assert service.process is not None
            if service.process.poll() is not None:
                tail = service.log_path.read_text(errors="replace").splitlines()[-20:]
                raise SystemExit(
                    f"{service.name} exited with {service.process.returncode}:\n" + "\n".join(tail)
                )
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"{service.name}: {service.ready_path} not 200 after {timeout_s} s"
                )
            time.sleep(0.05)


def stop(service: Service) -> None:
    """SIGTERM, then wait; a service that does not stop in time is killed (exit_code None)."""
    if service.process is None or service.process.poll() is not None:
        return
    started = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    try:
        service.exit_code = service.process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait()
    service.stop_s = time.monotonic() - started


def kill(process: "subprocess.Popen[Any] | None") -> None:
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()


def broker_restarted(service: Service) -> bool:
    return "CONNECTION_FORCED" in service.log_path.read_text(errors="replace")


def log_problems(service: Service) -> list[str]:
    words = ("WARNING", "ERROR", "CRITICAL", "Traceback")
    text = service.log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if any(word in line for word in words)]


def run_loadgen(
    services: list[Service],
    extra_pids: list[int],
    loadgen_args: list[str],
    table: CpuTable,
    work: WorkTable,
) -> int:
    """loadgen against the gateways; samples every process's CPU, and the work the services
    asked of RabbitMQ and mongod, at each run boundary."""
    urls = [f"--url={s.url}" for s in services if s.command == "gateway"]
    # RabbitMQ and mongod count as server too, so that loadgen's `others` is only other tenants.
    pids = [f"--server-pid={pid}" for pid in [*(s.pid for s in services), *extra_pids]]
    argv = [sys.executable, "-u", str(BENCH_DIR / "loadgen.py"), *urls, *pids, *loadgen_args]
    paced = any(arg.split("=")[0] == "--paced-at" for arg in loadgen_args)
    measured_run = PACED_RUN_LINE if paced else RUN_LINE
    loadgen = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert loadgen.stdout is not None
        for line in loadgen.stdout:
            match = measured_run.match(line)
            if match:
                table.sample()
                work.sample()
                if match.group(2):
                    table.tasks.append(int(match.group(3)))
            print(line, end="", flush=True)
        return loadgen.wait()
    finally:
        kill(loadgen)


def start_profilers(services: list[Service], out_dir: Path) -> list[subprocess.Popen[bytes]]:
    """py-spy record (collapsed stacks, GIL holders only) of each service until SIGINT."""
    py_spy = Path(sys.executable).parent / "py-spy"
    out_dir.mkdir(parents=True, exist_ok=True)
    profilers = []
    for service in services:
        argv = [str(py_spy), "record", "--pid", str(service.pid), "--format", "raw", "--gil"]
        argv += ["--rate", "250", "--nonblocking", "-o", str(out_dir / f"{service.name}.txt")]
        profilers.append(
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return profilers


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="Other options go to bench/loadgen.py."
    )
    add = parser.add_argument
    add("--gateways", type=int, default=1)
    add("--dispatchers", type=int, default=1)
    add("--writers", type=int, default=1)
    add("--scale", type=int, help="N of each service (sets the three options above)")
    add("--store", choices=("sqlite", "mongo"), default="sqlite", help="the shared store")
    add(
        "--mongod",
        default=os.environ.get("DRONEFLOW_TEST_MONGOD") or shutil.which("mongod"),
        help="mongod binary for --store mongo (default: $DRONEFLOW_TEST_MONGOD, else PATH)",
    )
    add(
        "--mongo-options",
        default="",
        metavar="QUERY",
        help="extra options of the MongoDB URL, e.g. 'w=1&journal=false' (write concern)",
    )
    add("--no-peer", action="store_true", help="skip the Celery peer (bench/celery_peer.py)")
    add("--no-single", action="store_true", help="skip the one-task-in-flight runs")
    add("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/", help="user and host to use")
    add(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra environment variable of every service; may repeat",
    )
    add("--profile", type=Path, metavar="DIR", help="py-spy each service into DIR/<name>.txt")
    add("--keep-data", action="store_true", help="keep the SQLite file and the service logs")
    add("--startup-timeout-s", type=float, default=READY_TIMEOUT_S)
    args, loadgen_args = parser.parse_known_args(argv)
    if args.scale:
        args.gateways = args.dispatchers = args.writers = args.scale
    given = {a.split("=", 1)[0] for a in loadgen_args}
    for option, value in LOADGEN_DEFAULTS.items():
        if option not in given:
            loadgen_args += [option, value]
    if min(args.gateways, args.dispatchers, args.writers) < 1:
        parser.error("at least one of each service")
    if any(a == "--url" or a.startswith(("--url=", "--server-pid")) for a in loadgen_args):
        parser.error("--url and --server-pid are set by this script")
    return args, loadgen_args


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: stop services, delete the vhost


def plan(args: argparse.Namespace, data_dir: Path) -> list[Service]:
    services = []
    for command, count, short in (
        ("gateway", args.gateways, "gateway"),
        ("dispatcher", args.dispatchers, "dispatcher"),
        ("result-writer", args.writers, "writer"),
    ):
        for i in range(count):
            name = f"{short}{i}"
            services.append(Service(command, name, free_port(), data_dir / f"{name}.log"))
    return services


def stop_all(services: list[Service]) -> bool:
    """SIGTERM each, gateways first (their drone sockets hand tasks back while the others still
    run); prints how each stopped. True when every one exited 0."""
    for service in services:
        with contextlib.suppress(OSError):
            print(f"{service.name}: peak RSS {memory_mib(service.pid, 'VmHWM'):.0f} MiB", end="; ")
    print()
    for service in services:
        stop(service)
    for service in services:
        problems = log_problems(service)
        print(
            f"{service.name} stopped by SIGTERM in {service.stop_s:.1f} s,"
            f" exit code {service.exit_code}"
            + (f"; log: {len(problems)} warning/error lines" if problems else "")
        )
        for line in problems[:3]:
            print(f"  {line}")
    if any(broker_restarted(service) for service in services):
        print("RabbitMQ closed the connections (restarted, e.g. by another tenant's fault tests):")
        print("the figures of the run it hit are not comparable")
    return all(service.exit_code == 0 for service in services)


def loadgen_option(loadgen_args: list[str], option: str) -> str:
    """The value of one of loadgen's options in `loadgen_args` (defaults were filled in)."""
    for i, arg in enumerate(loadgen_args):
        if arg == option:
            return loadgen_args[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    raise KeyError(option)


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in ("tasks_per_s", "p50", "p99")}


def droneflow_figures(json_path: Path) -> dict[str, Any]:
    """Medians of loadgen's runs, and the p99 of its paced runs when it made some (loadgen
    --half-peak: paced at half the closed-loop median)."""
    figures = json.loads(json_path.read_text())
    ours: dict[str, Any] = medians(figures["runs"] or figures["half_peak_runs"])
    if figures.get("half_peak_runs"):
        ours["half_peak_p99"] = medians(figures["half_peak_runs"])["p99"]
    return ours


def stop_profilers(profilers: list[subprocess.Popen[bytes]]) -> None:
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)
    for profiler in profilers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            profiler.wait(30)


def single_p50_ms(
    services: list[Service],
    extra_pids: list[int],
    loadgen_args: list[str],
    json_path: Path,
    work: WorkTable,
) -> float:
    """p50 round trip of one application with one task in flight (one drone per gateway)."""
    argv = ["--apps", "1", "--inflight", "1", "--tasks", str(SINGLE_TASKS), "--repeat", "1"]
    argv += ["--warmup", "50", "--priority", "3", "--json", str(json_path)]
    argv += ["--drones", loadgen_option(loadgen_args, "--drones")]
    table = CpuTable([], [])
    if run_loadgen(services, extra_pids, argv, table, work) != 0:
        return float("nan")
    return float(json.loads(json_path.read_text())["runs"][0]["p50"])


def peer(
    args: argparse.Namespace, loadgen_args: list[str], rabbit: int | None, half_peak: bool
) -> dict[str, Any]:
    """The Celery peer on a vhost of its own, confirms on, at droneflow's in-flight count."""
    from celery_peer import line, run_celery_peer

    inflight = int(loadgen_option(loadgen_args, "--apps")) * int(
        loadgen_option(loadgen_args, "--inflight")
    )
    tasks = int(loadgen_option(loadgen_args, "--tasks"))
    repeat = int(loadgen_option(loadgen_args, "--repeat"))
    figures: dict[str, Any] = {}
    with fresh_vhost(args.amqp_url) as url:
        figures = run_celery_peer(
            url,
            inflight,
            tasks,
            confirms=True,
            repeat=repeat,
            warmup=int(loadgen_option(loadgen_args, "--warmup")),
            single_tasks=0 if args.no_single else SINGLE_TASKS,
            measure_pids={"rabbitmq": rabbit} if rabbit else None,
        )
        print(line(figures), flush=True)
        if half_peak:
            paced = run_celery_peer(
                url,
                inflight,
                tasks,
                confirms=True,
                repeat=repeat,
                warmup=0,
                single_tasks=0,
                rate_per_s=figures["tasks_per_s"] / 2,
            )
            figures["half_peak_p99_ms"] = paced["p99_ms"]
            print(f"celery paced at half its peak: p99 {paced['p99_ms']:.1f} ms", flush=True)
    return figures


def print_ratios(
    ours: dict[str, Any], celery: dict[str, Any] | None, cpu: dict[str, float]
) -> None:
    """The issue's table: droneflow against the Celery peer, medians."""
    print("\n| figure (medians) | droneflow | celery (confirms) | droneflow / celery |")
    print("|---|---:|---:|---:|")

    def row(name: str, mine: float | None, theirs: float | None, fmt: str) -> None:
        ratio = f"{mine / theirs:.2f}x" if mine and theirs else "-"
        cells = [format(x, fmt) if x is not None else "-" for x in (mine, theirs)]
        print(f"| {name} | {cells[0]} | {cells[1]} | {ratio} |")

    c = celery or {}
    row("tasks/s", ours["tasks_per_s"], c.get("tasks_per_s"), ",.0f")
    row("p50 ms", ours["p50"], c.get("p50_ms"), ".1f")
    row("p99 ms", ours["p99"], c.get("p99_ms"), ".1f")
    row("p99 ms at half of peak", ours.get("half_peak_p99"), c.get("half_peak_p99_ms"), ".1f")
    row("1 in flight p50 ms", ours.get("single_p50"), c.get("single_p50_ms"), ".2f")
    total = sum(v for v in cpu.values() if v == v)
    row("CPU µs/task, all processes", total, sum(c.get("cpu_us_per_task", {}).values()), ",.0f")
    print("CPU µs/task: " + ", ".join(f"{n} {v:,.0f}" for n, v in cpu.items()))
    if c:
        print(
            "celery CPU µs/task: "
            + ", ".join(f"{n} {v:,.0f}" for n, v in c["cpu_us_per_task"].items())
        )


def bench(args: argparse.Namespace, loadgen_args: list[str], data_dir: Path) -> int:
    services = plan(args, data_dir)
    profilers: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:
        store_url, mongod_pid = f"sqlite:///{data_dir / 'droneflow.db'}", None
        if args.store == "mongo":
            store_url, mongod_pid = stack.enter_context(mongod(args.mongod))
            if args.mongo_options:
                store_url += "&" + args.mongo_options
        broker_url = stack.enter_context(fresh_vhost(args.amqp_url))
        try:  # every process is gone before the vhost is deleted
            env = {
                **os.environ,
                "DRONEFLOW_BROKER_URL": broker_url,
                "DRONEFLOW_STORE_URL": store_url,
                "DRONEFLOW_DATA_DIR": str(data_dir),
                **dict(item.split("=", 1) for item in args.env),
            }
            for service in services:
                start(service, env)
            wait_ready(services, args.startup_timeout_s)
            rabbit = rabbitmq_pid()
            vhost = urllib.parse.unquote(urllib.parse.urlsplit(broker_url).path[1:])
            print(
                f"droneflow distributed on {args.store}: {args.gateways} gateway(s),"
                f" {args.dispatchers} dispatcher(s), {args.writers} result writer(s)"
                f" | vhost {vhost} | {', '.join(f'{s.name} pid {s.pid}' for s in services)}"
                f" | rabbitmq pid {rabbit} | mongod pid {mongod_pid}"
                + "".join(f" | {item}" for item in args.env),
                flush=True,
            )
            measured = [(s.name, s.pid) for s in services]
            measured += [(n, p) for n, p in (("rabbitmq", rabbit), ("mongod", mongod_pid)) if p]
            extra_pids = [p for p in (rabbit, mongod_pid) if p]
            table = CpuTable([name for name, _ in measured], [pid for _, pid in measured])
            amqp_port = urllib.parse.urlsplit(args.amqp_url).port or 5672
            work = WorkTable(
                {s.pid for s in services}, amqp_port, store_url if mongod_pid else None
            )
            if args.profile:
                profilers = start_profilers(services, args.profile)
            json_path = data_dir / "loadgen.json"
            status = run_loadgen(
                services, extra_pids, [*loadgen_args, "--json", str(json_path)], table, work
            )
            stop_profilers(profilers)
            table.print()
            work.print(table.tasks)
            ours = droneflow_figures(json_path)
            if not args.no_single:
                ours["single_p50"] = single_p50_ms(
                    services, extra_pids, loadgen_args, data_dir / "single.json", work
                )
            cpu = table.per_task_medians()
            healthy = stop_all(services)
            if args.profile:
                print(f"profiles in {args.profile}")
        finally:
            for profiler in profilers:
                kill(profiler)
            for service in services:
                kill(service.process)
    celery = None
    if not args.no_peer:
        celery = peer(args, loadgen_args, rabbitmq_pid(), "--half-peak" in loadgen_args)
    print_ratios(ours, celery, cpu)
    return 0 if status == 0 and healthy else 1


def main(argv: list[str] | None = None) -> int:
    args, loadgen_args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    data_dir = Path(tempfile.mkdtemp(prefix="droneflow-dist-"))
    try:
        return bench(args, loadgen_args, data_dir)
    finally:
        if args.keep_data:
            print(f"SQLite file and service logs kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
