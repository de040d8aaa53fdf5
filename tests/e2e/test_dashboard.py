"""/dashboard in a real browser: Debian's headless Chromium driven by Playwright, against an
embedded server, with a drone that speaks the raw WebSocket protocol. The screenshot is kept
under test-artifacts/ (printed at the end of the test)."""

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.clients import WsClient, result_message
from tests.e2e.conftest import Server

CHROMIUM = os.environ.get("DRONEFLOW_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROW_TIMEOUT_MS = 15_000

try:
    from playwright.async_api import BrowserContext, Locator, Page, Route, async_playwright, expect
except ImportError:  # pragma: no cover - the test extra installs it
    async_playwright = None  # type: ignore[assignment]


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    if async_playwright is None:
        pytest.skip("the dashboard test needs the Python package playwright (the test extra)")
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"the dashboard test needs Chromium at {CHROMIUM} (apt-get install chromium)")
    async with async_playwright() as playwright:
        # A fresh profile per run: nothing cached or remembered from an earlier page.
        context = await playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1360, "height": 1000},
        )
        try:
            yield context
        finally:
            await context.close()


def status_of(page: "Page", task_id: str) -> "Locator":
    return page.locator(f'#tasks tr[data-task-id="{task_id}"] .badge')


async def submit_from_page(page: "Page", drone_id: str) -> str:
    await page.fill('#submit-form input[name="drone_id"]', drone_id)
    before = await page.locator("#submit-result").get_attribute("data-task-id")
    await page.click('#submit-form button[type="submit"]')
    result = page.locator("#submit-result")
    await expect(result).to_contain_text("Created")
    await expect(result).not_to_have_attribute("data-task-id", before or "")
    task_id = await result.get_attribute("data-task-id")
    assert task_id is not None
    return task_id


async def test_dashboard_submits_follows_and_cancels_tasks_live(
    server: Server, browser: "BrowserContext", http: httpx.AsyncClient
) -> None:
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{server.base_url}/dashboard")
    await page.evaluate("window.loadedOnce = true")

    # Given a drone connected over the raw protocol, and an application online
    async with (
        WsClient(server.drone_ws("Drone001", capacity=2)) as drone,
        WsClient(server.app_ws("Viewer")) as app,
    ):
        await drone.wait_type("connection_established")
        await app.wait_type("connection_established")
        await expect(page.locator('#drones tr[data-drone-id="Drone001"]')).to_contain_text(
            "0 / 2", timeout=ROW_TIMEOUT_MS
        )
        await expect(page.locator('#apps li[data-app-id="Viewer"]')).to_be_visible()

        # When a task is submitted from the page, the drone starts it and then finishes it
        task_id = await submit_from_page(page, "Drone001")
        await drone.wait_type("processing_task", task_id=task_id)
        await drone.send(
            {"type": "task_status_update", "data": {"task_id": task_id, "status": "processing"}}
        )
        await expect(status_of(page, task_id)).to_have_text("processing", timeout=ROW_TIMEOUT_MS)
        await drone.send(result_message(task_id, "Drone001"))

        # Then its row reaches completed without a reload, its id in full
        await expect(status_of(page, task_id)).to_have_text("completed", timeout=ROW_TIMEOUT_MS)
        row = page.locator(f'#tasks tr[data-task-id="{task_id}"]')
        await expect(row.locator(".id")).to_have_text(task_id)
        await expect(row.locator("button.cancel")).to_be_hidden()

        # When a task for a drone that is away is cancelled from the page
        waiting_id = await submit_from_page(page, "DroneAway")
        await expect(status_of(page, waiting_id)).to_have_text("pending", timeout=ROW_TIMEOUT_MS)
        await page.locator(f'#tasks tr[data-task-id="{waiting_id}"] button.cancel').click()

        # Then its row shows cancelled, and so does the API
        await expect(status_of(page, waiting_id)).to_have_text("cancelled", timeout=ROW_TIMEOUT_MS)
        stored = (await http.get(f"/api/processing-tasks/{waiting_id}")).json()
        assert stored["status"] == "cancelled"

        # And the counts and the throughput chart include the finished tasks
        completed = page.locator('#status-counts [data-status="completed"] .value')
        await expect(completed).to_have_text("1")
        await expect(page.locator("#chart-throughput rect.bar-done")).to_have_count(1)
        await expect(page.locator("#chart-latency polyline")).not_to_have_count(0)

        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "dashboard.png"
        await page.screenshot(path=screenshot, full_page=True)
        print(f"dashboard screenshot: {screenshot}")  # noqa: T201

    assert await page.evaluate("window.loadedOnce") is True  # never reloaded
    assert errors == []


async def test_dashboard_asks_for_a_token_when_the_api_answers_401(
    server: Server, browser: "BrowserContext"
) -> None:
    # Given a gateway whose API refuses requests without the admin token (stood in for here by
    # the browser, as the gateway checks no tokens yet)
    seen: list[str | None] = []

    async def gate(route: "Route") -> None:
        authorization = route.request.headers.get("authorization")
        seen.append(authorization)
        if authorization == "Bearer admin-token":
            await route.continue_()
        else:
            await route.fulfill(status=401, json={"detail": "no valid bearer token"})

    page = await browser.new_page()
    await page.route("**/api/**", gate)
    await page.goto(f"{server.base_url}/dashboard")

    # When the page asks, and is given the token
    dialog = page.locator("#token-dialog")
    await expect(dialog).to_be_visible()
    await dialog.locator('input[name="token"]').fill("admin-token")
    await dialog.locator('button[value="ok"]').click()

    # Then it sends the token as a bearer header from then on
    await expect(page.locator("#link-state")).to_have_text("live", timeout=ROW_TIMEOUT_MS)
    assert "Bearer admin-token" in seen
