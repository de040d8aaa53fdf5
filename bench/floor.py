"""How close `serve` runs to the least its round trip can cost here: bench/loadgen.py against
bench/relay.py (the four frames alone), the relay with serve's store writes, and `serve`, one
after the other at each load, on the same machine in the same minutes. Prints a table and each
row's share of the relay-with-store's throughput; `--vs-celery` adds the Celery peer (confirms
on) after the last load and every row's ratio to it.

    python bench/floor.py [--loads 1,100,800] [--tasks 8000] [--repeat 3] [--vs-celery]

Loads: 1 is one app, one drone of capacity 1 and one task in flight; 100 and 800 are 4 apps
with 25 and 200 in flight each and loadgen's 16 drones of capacity 4.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from server_process import Target, free_port, stop_server, wait_healthy

BENCH_DIR = Path(__file__).resolve().parent
VARIANTS = ("relay", "relay + store", "serve")


def load_args(load: int, tasks: int) -> list[str]:
    if load == 1:
        return ["--apps", "1", "--inflight", "1", "--drones", "1", "--capacity", "1",
                "--tasks", str(min(tasks, 2000))]  # fmt: skip
    if load % 4:
        raise SystemExit(f"--loads: {load} is neither 1 nor a multiple of 4 (4 apps)")
    return ["--apps", "4", "--inflight", str(load // 4), "--tasks", str(tasks)]


@contextmanager
def relay(with_store: bool) -> Iterator[Target]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="droneflow-bench-relay-") as data_dir:
        argv = [sys.executable, str(BENCH_DIR / "relay.py"), "--port", str(port)]
        if with_store:
            argv += ["--store", "--data-dir", data_dir]
        process = subprocess.Popen(argv)
        target = Target([f"http://127.0.0.1:{port}"], [process.pid], process)
        try:
            wait_healthy(target, 30)
            yield target
        finally:
            stop_server(target, 10)


def loadgen(extra: list[str], json_path: Path) -> dict[str, Any]:
    argv = [sys.executable, str(BENCH_DIR / "loadgen.py"), *extra, "--json", str(json_path)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0 or not json_path.exists():
        raise SystemExit(f"loadgen {' '.join(extra)} failed:\n{done.stdout[-2000:]}{done.stderr}")
    figures: dict[str, Any] = json.loads(json_path.read_text())
    return figures


def medians(figures: dict[str, Any]) -> dict[str, float]:
    runs = figures["runs"]
    return {
        key: statistics.median(r[key] for r in runs)
        for key in ("tasks_per_s", "p50", "p99", "server_us_per_task")
    }


def measure(variant: str, load: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    extra = [*load_args(load, args.tasks), "--repeat", str(args.repeat)]
    json_path = out / f"{variant.replace(' + ', '-')}-{load}.json"
    if variant == "serve":
        return loadgen(extra, json_path)
    with relay(variant == "relay + store") as target:
        pid = str(target.pids[0])
        return loadgen([*extra, "--url", target.url, "--server-pid", pid], json_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", default="1,100,800", help="tasks in flight, comma-separated")
    parser.add_argument(
        "--tasks", type=int, default=8000, help="tasks per run (at most 2000 at 1 in flight)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant and load")
    parser.add_argument("--vs-celery", action="store_true", help="the Celery peer at the last load")
    args = parser.parse_args()
    loads = [int(x) for x in args.loads.split(",")]
    rows: list[tuple[int, str, dict[str, float]]] = []
    celery: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="droneflow-bench-floor-") as tmp:
        for load in loads:
            for variant in VARIANTS:
                figures = measure(variant, load, args, Path(tmp))
                rows.append((load, variant, medians(figures)))
                print(f"{load:>4} in flight  {variant:<14} {format_row(rows[-1][2])}", flush=True)
        if args.vs_celery:
            extra = [*load_args(loads[-1], args.tasks), "--repeat", str(args.repeat)]
            peers = loadgen([*extra, "--vs-celery"], Path(tmp) / "celery.json")["celery"]
            celery = next(p for p in peers if p["confirms"])
    print_table(rows, celery)


def format_row(m: dict[str, float]) -> str:
    return (
        f"{m['tasks_per_s']:>7,.0f} tasks/s  p50 {m['p50']:6.1f} ms  p99 {m['p99']:7.1f} ms"
        f"  server {m['server_us_per_task']:5.0f} µs/task"
    )


def print_table(
    rows: list[tuple[int, str, dict[str, float]]], celery: dict[str, Any] | None
) -> None:
    print("\nmedians of each variant's runs; 'of floor' = tasks/s / the relay-with-store's")
    with_store = {load: m["tasks_per_s"] for load, v, m in rows if v == "relay + store"}
    header = "| in flight | variant | tasks/s | p50 ms | p99 ms | server µs/task | of floor |"
    if celery:
        header += f" x Celery ({celery['tasks_per_s']:,.0f}/s at {celery['inflight']}) |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for load, variant, m in rows:
        line = (
            f"| {load} | {variant} | {m['tasks_per_s']:,.0f} | {m['p50']:.1f} | {m['p99']:.1f}"
            f" | {m['server_us_per_task']:.0f} | {m['tasks_per_s'] / with_store[load]:.0%} |"
        )
        if celery:
            ratio = m["tasks_per_s"] / celery["tasks_per_s"]
            line += f" {ratio:.2f}x |" if load == celery["inflight"] else " |"
        print(line)


if __name__ == "__main__":
    main()
