"""/dashboard in a real browser: Debian's headless Chromium driven by Playwright, against an
embedded server, with a drone that speaks the raw WebSocket protocol. The screenshot is kept in
$DRONEFLOW_TEST_ARTIFACTS, by default test-artifacts/ at the top of the repository; its path is
printed and recorded as the test's `screenshot` property (JUnit XML)."""

import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from droneflow.client import DroneWorker
from tests.authz_table import write_key_pair
from tests.e2e.clients import WsClient, result_message, task_body
from tests.e2e.conftest import Server
from tests.sdk_workers import fast_backoff, running

CHROMIUM = os.environ.get("DRONEFLOW_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(
    os.environ.get("DRONEFLOW_TEST_ARTIFACTS")
    or Path(__file__).resolve().parents[2] / "test-artifacts"
)
DAY_S = 86400.0
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
    from playwright.async_api import BrowserContext, Locator, Page, async_playwright, expect
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


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


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


def drone_row(page: "Page", drone_id: str) -> "Locator":
    return page.locator(f'#drones tr[data-drone-id="{drone_id}"]')


async def bar_total(page: "Page", kind: str) -> int:
    counts: list[str] = await page.locator(f"#chart-throughput rect.{kind}").evaluate_all(
        "bars => bars.map(bar => bar.dataset.count)"
    )
    return sum(int(count) for count in counts)


async def test_dashboard_submits_follows_and_cancels_tasks_live(
    server: Server,
    browser: "BrowserContext",
    http: httpx.AsyncClient,
    artifacts: Path,
    record_property: Callable[[str, object], None],
) -> None:
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{server.base_url}/dashboard")
    await page.evaluate("window.loadedOnce = true")

    # Given a drone with one slot, connected over the raw protocol, and an application online
    async with (
        WsClient(server.drone_ws("Drone001", capacity=1)) as drone,
        WsClient(server.app_ws("Viewer")) as app,
    ):
        await drone.wait_type("connection_established")
        await app.wait_type("connection_established")
        await expect(drone_row(page, "Drone001").locator(".load")).to_have_text(
            "0 / 1", timeout=ROW_TIMEOUT_MS
        )
        await expect(page.locator('#apps li[data-app-id="Viewer"]')).to_be_visible()
        await expect(page.locator("#count-drones")).to_have_text("1")
        await expect(page.locator("#count-apps")).to_have_text("1")
        for queue in ("intake", "events", "dead"):
            await expect(page.locator(f"#queue-{queue}")).to_have_text(re.compile(r"^\d+$"))

        # When a task is submitted from the page and the drone starts it
        task_id = await submit_from_page(page, "Drone001")
        await drone.wait_type("processing_task", task_id=task_id)
        await drone.send(
            {"type": "task_status_update", "data": {"task_id": task_id, "status": "processing"}}
        )
        await expect(status_of(page, task_id)).to_have_text("processing", timeout=ROW_TIMEOUT_MS)

        # Then the drone's load shows it, and a second task waits in its queue
        await expect(drone_row(page, "Drone001").locator(".load")).to_have_text(
            "1 / 1", timeout=ROW_TIMEOUT_MS
        )
        queued_id = await submit_from_page(page, "Drone001")
        await expect(status_of(page, queued_id)).to_have_text("pending", timeout=ROW_TIMEOUT_MS)
        await expect(drone_row(page, "Drone001").locator(".queued")).to_have_text(
            "1", timeout=ROW_TIMEOUT_MS
        )

        # When the drone finishes both
        await drone.send(result_message(task_id, "Drone001"))
        await drone.wait_type("processing_task", task_id=queued_id)
        await drone.send(result_message(queued_id, "Drone001"))

        # Then their rows reach completed without a reload, their ids in full
        for finished_id in (task_id, queued_id):
            await expect(status_of(page, finished_id)).to_have_text(
                "completed", timeout=ROW_TIMEOUT_MS
            )
            row = page.locator(f'#tasks tr[data-task-id="{finished_id}"]')
            await expect(row.locator(".id")).to_have_text(finished_id)
            await expect(row.locator("button.cancel")).to_be_hidden()

        # When a task for a drone that is away is cancelled from the page
        waiting_id = await submit_from_page(page, "DroneAway")
        await expect(status_of(page, waiting_id)).to_have_text("pending", timeout=ROW_TIMEOUT_MS)
        await page.locator(f'#tasks tr[data-task-id="{waiting_id}"] button.cancel').click()

        # Then its row shows cancelled, and so does the API
        await expect(status_of(page, waiting_id)).to_have_text("cancelled", timeout=ROW_TIMEOUT_MS)
        stored = (await http.get(f"/api/processing-tasks/{waiting_id}")).json()
        assert stored["status"] == "cancelled"

        # And the counts and the charts include the finished tasks
        counts = page.locator("#status-counts")
        await expect(counts.locator('[data-status="completed"] .value')).to_have_text("2")
        await expect(counts.locator('[data-status="cancelled"] .value')).to_have_text("1")
        await expect(counts.locator('[data-status="pending"] .value')).to_have_text("0")
        assert await bar_total(page, "bar-done") == 2
        assert await bar_total(page, "bar-failed") == 1
        latencies = await page.locator("#chart-latency circle.line-p50").evaluate_all(
            "points => points.map(point => Number(point.dataset.seconds))"
        )
        assert latencies and all(seconds >= 0 for seconds in latencies)

        screenshot = artifacts / "dashboard.png"
        await page.screenshot(path=screenshot, full_page=True)
        record_property("screenshot", str(screenshot))
        print(f"dashboard screenshot: {screenshot}")  # noqa: T201

    assert await page.evaluate("window.loadedOnce") is True  # never reloaded
    assert errors == []


async def test_dashboard_with_tokens_on_asks_for_an_admin_token(
    server_factory: object, browser: "BrowserContext", tmp_path: Path
) -> None:
    # Given a gateway with tokens on, and a drone connected with its own token
    keys, private_key_file, _ = write_key_pair(tmp_path / "keys")
    server: Server = await server_factory(  # type: ignore[operator]
        auth="token", auth_private_key_file=private_key_file
    )
    worker = DroneWorker(
        server.base_url,
        drone_id="TokDrone",
        token=keys.issue("drone", "TokDrone", DAY_S),
        backoff=fast_backoff(),
    )
    async with running(worker):
        page = await browser.new_page()
        await page.goto(f"{server.base_url}/dashboard")
        dialog = page.locator("#token-dialog")
        problem = dialog.locator("#token-problem")

        # When the page loads, it asks for a token
        await expect(dialog).to_be_visible()
        await expect(problem).to_have_text("This gateway asks for an admin token.")

        # A token that is not one is refused, saying so, and the page asks again
        await dialog.locator('input[name="token"]').fill("not-a-token")
        await dialog.locator('button[value="ok"]').click()
        await expect(problem).to_contain_text("That token was refused")
        await expect(dialog).to_be_visible()

        # So is a valid token that is not an admin's
        app_token = keys.issue("app", "SomeApp", DAY_S)
        await dialog.locator('input[name="token"]').fill(app_token)
        await dialog.locator('button[value="ok"]').click()
        await expect(problem).to_contain_text("not an admin token")

        # Then an admin token opens the page: the fleet shows
        await dialog.locator('input[name="token"]').fill(keys.issue("admin", "ops", DAY_S))
        await dialog.locator('button[value="ok"]').click()
        await expect(dialog).to_be_hidden()
        await expect(drone_row(page, "TokDrone").locator(".load")).to_have_text(
            "0 / 4", timeout=ROW_TIMEOUT_MS
        )
        await expect(page.locator("#link-state")).to_have_text("live")


async def test_dashboard_shows_unfinished_tasks_older_than_its_window(
    server: Server, browser: "BrowserContext", http: httpx.AsyncClient
) -> None:
    # Given a task waiting for a drone that is away
    created = await http.post("/api/processing-tasks", json=task_body("App1", "DroneAway"))
    task_id = created.json()["task_id"]
    updated_at = (await http.get(f"/api/processing-tasks/{task_id}")).json()["updated_at"]

    # When a page opens whose window of finished tasks (0.0001 min) that task is older than
    page = await browser.new_page()
    await page.goto(f"{server.base_url}/dashboard?minutes=0.0001")
    assert await page.evaluate(f"Date.now() - Date.parse('{updated_at}') > 6")

    # Then it lists and counts the task all the same: it is not finished
    await expect(status_of(page, task_id)).to_have_text("pending", timeout=ROW_TIMEOUT_MS)
    pending = page.locator('#status-counts [data-status="pending"] .value')
    await expect(pending).to_have_text("1")
