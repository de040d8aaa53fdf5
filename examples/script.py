"""The same without asyncio, for scripts and notebooks: `python examples/script.py [url]`."""

import sys

from droneflow.client import SyncAppClient

url = sys.argv[1] if len(sys.argv) > 1 else "http://localhost:8000"
with SyncAppClient(url, app_id="App001") as app:
    handle = app.submit(
        drone_id="Drone001",
        task_type="image_analysis",
        input_data={"image_url": "https://example.com/image.jpg"},
    )
    print(handle.task_id, handle.result(timeout=30).result_data)
