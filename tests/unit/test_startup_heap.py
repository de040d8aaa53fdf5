"""Each service of the distributed deployment leaves its start-up heap out of garbage
collection once its adapters are up (droneflow.runner._supervised), as `serve` does
(tests/e2e/test_heap.py). In a child process: the freeze is once per process, and this one's
may already have been made by an embedded server of another test."""

import subprocess
import sys
from pathlib import Path

from droneflow.runner import GC_YOUNG_THRESHOLD

_SERVICE = """
import asyncio, gc, sys
from droneflow.runner import _supervised
from shared.settings import Settings

async def serve(broker, store):
    print(gc.get_freeze_count(), gc.get_threshold()[0])

settings = Settings(data_dir=sys.argv[1], broker_url="memory://")
asyncio.run(_supervised("test", settings, asyncio.Event(), serve))
"""


def test_supervised_service_freezes_startup_heap(tmp_path: Path) -> None:
    # Given a service started the way the distributed deployment starts each one
    done = subprocess.run(
        [sys.executable, "-c", _SERVICE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # Then by the time it serves, its start-up heap is frozen and young collections are rarer
    frozen, young_threshold = map(int, done.stdout.split())
    assert frozen > 0
    assert young_threshold == GC_YOUNG_THRESHOLD
