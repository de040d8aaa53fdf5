"""What /proc says about processes and the whole machine, and the clock it is sampled on."""

import os
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
now = time.monotonic  # CLOCK_MONOTONIC is system-wide, so generator processes share it
_HAS_SCHEDSTAT = Path("/proc/self/schedstat").exists()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all threads."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # comm may hold spaces; fields start at 3
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def runnable_wait_s(pid: int) -> float | None:
    """Seconds the process's live threads have spent runnable but waiting for a CPU (the second
    field of each thread's schedstat), or None where the kernel keeps no such statistics or the
    process is gone. A thread that ended takes its share with it: compare samples of a process
    whose busy threads live as long as it does."""
    if not _HAS_SCHEDSTAT:
        return None
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return None
    total_ns = 0
    for task in tasks:
        try:
            total_ns += int((task / "schedstat").read_text().split()[1])
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return total_ns / 1e9


def box_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, all cores, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    total = sum(ticks[:8])  # guest time is already counted in user
    return (total - idle) / CLOCK_TICKS_PER_S, total / CLOCK_TICKS_PER_S


def memory_mib(pid: int, key: str) -> float:
    """`VmHWM` (peak resident set) or `VmRSS` from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


@dataclass
class CpuSample:
    """CPU seconds so far of the server, of the generator, and of the whole machine."""

    at: float
    server_s: float | None
    generator_s: float
    box_busy_s: float
    box_total_s: float

    @classmethod
    def take(cls, server_pids: list[int], generator_pids: list[int]) -> "CpuSample":
        try:
            server_s = sum(cpu_s(pid) for pid in server_pids) if server_pids else None
        except OSError:  # the server is gone
            server_s = None
        return cls(now(), server_s, sum(cpu_s(pid) for pid in generator_pids), *box_cpu_s())
