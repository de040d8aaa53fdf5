"""What the services of a distributed run ask of RabbitMQ and MongoDB, per task.

When more processes share the two cores, their CPU per task mixes two things: the work each task
makes (AMQP traffic, store commands, document writes) and what the processes cost each other
(the cores' contention, each process's idle background). This counts the first: the bytes and
TCP segments on the services' own AMQP sockets, from the kernel's tcp_info (`ss`, so RabbitMQ is
asked nothing), and mongod's commands and document writes (`serverStatus`). Two of each service
should make the same work per task as one of each; what they make beyond it is coordination.
"""

import math
import re
import statistics
import subprocess
from dataclasses import dataclass, field

from pymongo import MongoClient

FIELDS = ("AMQP kB", "AMQP TCP segments", "mongod commands", "mongod document writes")

_PID = re.compile(r"\bpid=(\d+)")
_COUNTER = re.compile(r"\b(bytes_sent|bytes_received|segs_out|segs_in):(\d+)")


def amqp_counters(pids: set[int], port: int) -> tuple[int, int]:
    """(bytes, segments), both ways, of every TCP connection from one of `pids` to `port`."""
    listing = subprocess.run(
        ["ss", "-tinpH", f"dport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    total_bytes = total_segments = 0
    ours = False
    for line in listing.splitlines():
        if not line[:1].isspace():  # a socket and its owners; its tcp_info is the next line
            ours = any(int(pid) in pids for pid in _PID.findall(line))
            continue
        if ours:
            counters = {name: int(value) for name, value in _COUNTER.findall(line)}
            total_bytes += counters.get("bytes_sent", 0) + counters.get("bytes_received", 0)
            total_segments += counters.get("segs_out", 0) + counters.get("segs_in", 0)
    return total_bytes, total_segments


def mongod_counters(url: str) -> tuple[int, int]:
    """(commands, documents inserted, updated or deleted) since mongod started."""
    client: MongoClient[dict[str, object]] = MongoClient(url, serverSelectionTimeoutMS=5000)
    with client:
        status = client.admin.command("serverStatus")
    metrics = status["metrics"]
    # Every command mongod ran (a batch of inserts is one), the drivers' monitoring included;
    # opcounters would count each inserted document instead.
    commands = sum(
        counts["total"] for counts in metrics["commands"].values() if isinstance(counts, dict)
    )
    documents = metrics["document"]
    return commands, documents["inserted"] + documents["updated"] + documents["deleted"]


@dataclass
class WorkTable:
    """The counters at each run boundary that loadgen printed (sampled with the CPU table)."""

    pids: set[int]
    amqp_port: int
    mongod_url: str | None
    samples: list[tuple[float, ...]] = field(default_factory=list)

    def sample(self) -> None:
        amqp_bytes, segments = amqp_counters(self.pids, self.amqp_port)
        commands, writes = (
            mongod_counters(self.mongod_url) if self.mongod_url else (math.nan, math.nan)
        )
        self.samples.append((amqp_bytes / 1000, segments, commands, writes))

    def per_task(self, tasks: list[int]) -> list[list[float]]:
        """Each field's count per task in each measured run."""
        runs = zip(self.samples, self.samples[1:], tasks, strict=False)
        return [
            [(b - a) / n for a, b in zip(before, after, strict=True)]
            for before, after, n in runs
            if n
        ]

    def print(self, tasks: list[int]) -> None:
        runs = self.per_task(tasks)
        if not runs:
            return
        width = max(len(name) for name in FIELDS)
        print("work per task, each run then the median:")
        for i, name in enumerate(FIELDS):
            values = [run[i] for run in runs]
            if all(math.isnan(value) for value in values):
                continue
            cells = "  ".join(f"{value:7.2f}" for value in values)
            print(f"  {name:<{width}}  {cells}  | median {statistics.median(values):7.2f}")
