"""Takes docs/dashboard.png: `python docs/dashboard_screenshot.py`.

Starts `droneflow serve` on a free port with a throwaway data dir, two SDK drones and an
application that submits a few tasks (one fails, one is cancelled, two are running and one
waits), then shoots /dashboard in headless Chromium (Debian's, as tests/e2e/test_dashboard.py
does)."""

import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from playwright.async_api import async_playwright, expect

from droneflow.client import AppClient, DroneWorker, Task

CHROMIUM = os.environ.get("DRONEFLOW_TEST_CHROMIUM", "/usr/bin/chromium")
OUTPUT = Path(__file__).resolve().parent / "dashboard.png"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def drone(url: str, drone_id: str, work_s: float) -> DroneWorker:
    worker = DroneWorker(url, drone_id=drone_id, capacity=2, drain_timeout_s=1)

    @worker.handler("image_analysis")
    async def analyse(task: Task) -> dict[str, object]:
        await task.progress(50)
        await asyncio.sleep(work_s * random.uniform(0.5, 1.5))
        if task.input_data.get("image_url") == "":
            raise ValueError("input_data.image_url is empty")
        return {"detected_objects": [{"type": "person", "confidence": 0.93}]}

    return worker


async def shoot(url: str) -> None:
    drones = [drone(url, "Survey-1", 0.4), drone(url, "Scout-2", 60.0)]
    running = [asyncio.create_task(d.run(handle_signals=False)) for d in drones]
    async with AppClient(url, app_id="Mapping") as app:
        for n in range(10):
            image = "" if n == 4 else f"https://example.com/field-{n}.jpg"
            await app.submit(
                drone_id="Survey-1",
                task_type="image_analysis",
                input_data={"image_url": image},
                priority=1 + n % 5,
            )
            await asyncio.sleep(0.3)
        for n in range(4):
            handle = await app.submit(
                drone_id="Scout-2",
                task_type="image_analysis",
                input_data={"image_url": f"https://example.com/ridge-{n}.jpg"},
            )
        await handle.cancel()  # the last two wait behind two running tasks
        await asyncio.sleep(2)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                ],
            )
            page = await browser.new_page(viewport={"width": 1360, "height": 1000})
            await page.goto(f"{url}/dashboard")
            await expect(page.locator("#tasks tr[data-task-id]")).to_have_count(14)
            await expect(page.locator('#drones tr[data-drone-id="Scout-2"]')).to_be_visible()
            await asyncio.sleep(2.5)  # a fleet refresh or two, for the charts
            await page.screenshot(path=OUTPUT, full_page=True)
            await browser.close()
    for worker in drones:
        worker.stop()
    await asyncio.gather(*running, return_exceptions=True)


async def wait_ready(url: str) -> None:
    async with httpx.AsyncClient() as client, asyncio.timeout(20):
        while True:
            try:
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.1)


def main() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "DRONEFLOW_DATA_DIR": data_dir, "DRONEFLOW_LOG_LEVEL": "warning"}
        argv = [sys.executable, "-m", "droneflow.cli", "serve", "--port", str(port)]
        server = subprocess.Popen(argv, env=env)
        try:
            asyncio.run(wait_ready(url))
            asyncio.run(shoot(url))
        finally:
            server.terminate()
            server.wait(20)
    sys.stdout.write(f"{OUTPUT}\n")


if __name__ == "__main__":
    main()
