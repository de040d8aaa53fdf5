"""A drone that analyses images: `python examples/drone.py [url]` (default localhost:8000).

Stops on Ctrl-C or SIGTERM after finishing the tasks it holds; reconnects by itself if the
server restarts."""

import asyncio
import logging
import sys

from droneflow.client import DroneWorker, Task

worker = DroneWorker(
    sys.argv[1] if len(sys.argv) > 1 else "http://localhost:8000",
    drone_id="Drone001",
    capacity=4,
)


@worker.handler("image_analysis")
async def analyse(task: Task) -> dict[str, object]:
    url = task.input_data.get("image_url")
    if not isinstance(url, str):
        raise ValueError("input_data.image_url is required")  # the task fails with this message
    for percent in (25, 50, 75):
        await asyncio.sleep(0.2)  # the real work goes here
        await task.progress(percent)
    return {"detected_objects": [{"type": "person", "confidence": 0.95, "source": url}]}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    worker.run_sync()
