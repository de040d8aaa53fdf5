"""An application that submits a task and follows it to its result:
`python examples/app.py [url]`, with `droneflow serve` and examples/drone.py running."""

import asyncio
import sys

from droneflow.client import AppClient, TaskFailed


async def main(url: str) -> int:
    async with AppClient(url, app_id="App001") as app:
        handle = await app.submit(
            drone_id="Drone001",
            task_type="image_analysis",
            input_data={"image_url": "https://example.com/image.jpg"},
            priority=3,
            timeout_s=60,  # released and retried if the drone holds it longer than this
        )
        print(f"submitted {handle.task_id}")
        async for update in handle.updates():
            print(f"  {update.status} {update.additional_data or ''}")
        try:
            result = await handle.result(timeout=30)
        except TaskFailed as failed:
            print(f"failed: {failed.error_code}: {failed.message}")
            return 1
        print(f"result: {result.result_data} in {result.processing_time}s")
        return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "http://localhost:8000")))
