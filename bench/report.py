"""The figures of each measured run, and how they are printed: the run lines, the medians, the
server's memory and CPU, and the JSON file."""

import argparse
import contextlib
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from fleet import PRIORITIES, PhaseResult
from procfs import CpuSample, cpu_s, memory_mib
from server_process import Target


def percentile_ms(sorted_s: list[float], q: float) -> float:
    """Nearest rank: the smallest latency with at least q of the latencies at or below it."""
    if not sorted_s:
        return math.nan
    return sorted_s[max(0, math.ceil(q * len(sorted_s)) - 1)] * 1000


@dataclass
class Run:
    """One measured phase. CPU figures are % of one core over the phase (200% = both cores)."""

    result: PhaseResult
    tasks_per_s: float
    p50: float
    p95: float
    p99: float
    max: float
    server_cpu_pct: float | None
    gen_cpu_pct: float
    others_cpu_pct: float  # everything else on the machine: other tenants, kernel threads
    server_us_per_task: float | None  # server CPU per task: comparable across noisy runs

    @classmethod
    def of(cls, result: PhaseResult, before: CpuSample, after: CpuSample) -> "Run":
        latencies = sorted(x for per_priority in result.latencies_s for x in per_priority)
        span_s = result.last_receive - result.first_send
        wall_s = after.at - before.at
        server_pct = server_us = None
        if after.server_s is not None and before.server_s is not None:
            server_pct = 100 * (after.server_s - before.server_s) / wall_s
            if result.received:
                server_us = 1e6 * (after.server_s - before.server_s) / result.received
        gen_pct = 100 * (after.generator_s - before.generator_s) / wall_s
        # /proc/stat ticks are per core; scale so that one busy core is 100%.
        cores = (after.box_total_s - before.box_total_s) / wall_s
        box_pct = (
            100
            * cores
            * (after.box_busy_s - before.box_busy_s)
            / (after.box_total_s - before.box_total_s)
        )
        return cls(
            result=result,
            tasks_per_s=result.received / span_s if result.received and span_s > 0 else 0.0,
            p50=percentile_ms(latencies, 0.50),
            p95=percentile_ms(latencies, 0.95),
            p99=percentile_ms(latencies, 0.99),
            max=percentile_ms(latencies, 1.0),
            server_cpu_pct=server_pct,
            gen_cpu_pct=gen_pct,
            others_cpu_pct=max(0.0, box_pct - gen_pct - (server_pct or 0)),
            server_us_per_task=server_us,
        )

    def line(self) -> str:
        r = self.result
        server = "?" if self.server_cpu_pct is None else f"{self.server_cpu_pct:.0f}%"
        text = (
            f"{r.received} tasks, {self.tasks_per_s:,.0f} tasks/s | latency ms p50 {self.p50:.1f}"
            f" p95 {self.p95:.1f} p99 {self.p99:.1f} max {self.max:.1f} | sent {r.sent}"
            f" received {r.received} lost {r.lost}"
            f" | cpu server {server} gen {self.gen_cpu_pct:.0f}%"
            f" others {self.others_cpu_pct:.0f}%"
        )
        extras = {
            "unsent": r.unsent,
            "connections lost": r.connections_lost,
            "unexpected": r.unexpected,
            "failed": r.failed,
            "redelivered": r.redelivered,
            "cancelled": r.cancelled,
            "errors": len(r.errors),
        }
        return text + "".join(f" | {k} {v}" for k, v in extras.items() if v)


def summarize(runs: list[Run]) -> bool:
    """Print the medians and the latency per priority; True when every task came back."""

    def median(values: list[float]) -> float:
        return statistics.median(values) if values else math.nan

    server = [r.server_cpu_pct for r in runs if r.server_cpu_pct is not None]
    per_task = [r.server_us_per_task for r in runs if r.server_us_per_task is not None]
    server_text = f"{median(server):.0f}% ({median(per_task):.0f} µs/task)" if per_task else "?"
    print(
        f"median of {len(runs)}: {median([r.tasks_per_s for r in runs]):,.0f} tasks/s"
        f" | latency ms p50 {median([r.p50 for r in runs]):.1f}"
        f" p95 {median([r.p95 for r in runs]):.1f} p99 {median([r.p99 for r in runs]):.1f}"
        f" | cpu server {server_text} gen {median([r.gen_cpu_pct for r in runs]):.0f}%"
        f" others {median([r.others_cpu_pct for r in runs]):.0f}%"
    )
    per_priority = [
        sorted(x for r in runs for x in r.result.latencies_s[p - 1]) for p in PRIORITIES
    ]
    print(
        "latency ms by priority (all runs): "
        + ", ".join(
            f"{p}: p50 {percentile_ms(lat, 0.5):.1f} p99 {percentile_ms(lat, 0.99):.1f}"
            for p, lat in zip(PRIORITIES, per_priority, strict=True)
            if lat
        )
    )
    return all(r.result.lost == r.result.unsent == 0 and not r.result.errors for r in runs)


def report_server(target: Target) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for pid in target.pids:
        with contextlib.suppress(OSError):
            figures[f"pid {pid}"] = {
                "peak_rss_mib": round(memory_mib(pid, "VmHWM"), 1),
                "rss_mib": round(memory_mib(pid, "VmRSS"), 1),
                "cpu_s": round(cpu_s(pid), 2),
            }
    for name, f in figures.items():
        print(
            f"server {name}: peak RSS {f['peak_rss_mib']:.1f} MiB (now {f['rss_mib']:.1f}),"
            f" {f['cpu_s']:.1f} CPU s in total"
        )
    return figures


def write_json(
    args: argparse.Namespace,
    runs: list[Run],
    server: dict[str, Any],
    *,
    paced: list[Run] | None = None,
    celery: list[dict[str, Any]] | None = None,
) -> None:
    def run_figures(run: Run) -> dict[str, Any]:
        return {k: v for k, v in vars(run).items() if k != "result"} | {
            "lost": run.result.lost,
            "unsent": run.result.unsent,
            "errors": run.result.errors,
        }

    figures = {
        "args": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in ("token_keys", "server_env")  # --auth: key objects, paths
        },
        "runs": [run_figures(r) for r in runs],
        "half_peak_runs": [run_figures(r) for r in paced or []],
        "server": server,
        "celery": celery or [],
    }
    args.json.write_text(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
