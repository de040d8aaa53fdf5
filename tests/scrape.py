"""Reading a droneflow /metrics page as Prometheus does (prometheus_client's own parser), and
waiting for a sample to reach a value: the server's counters are observable only by asking."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

SCRAPE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Scrape:
    samples: list[tuple[str, dict[str, str], float]]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels` (0 if none)."""
        return sum(
            value
            for sample, sample_labels, value in self.samples
            if sample == name and labels.items() <= sample_labels.items()
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            sample == name and labels.items() <= sample_labels.items()
            for sample, sample_labels, _ in self.samples
        )


async def scrape(http: httpx.AsyncClient, path: str = "/metrics") -> Scrape:
    response = await http.get(path)
    assert response.status_code == 200, response.text
    return Scrape(
        [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        ]
    )


async def wait_scrape(
    http: httpx.AsyncClient, done: Callable[[Scrape], bool], timeout_s: float = SCRAPE_TIMEOUT_S
) -> Scrape:
    async with asyncio.timeout(timeout_s):
        while not done(current := await scrape(http)):  # noqa: ASYNC110 (polled by HTTP)
            await asyncio.sleep(0.05)
        return current


async def wait_status(
    http: httpx.AsyncClient, path: str, status_code: int, timeout_s: float = SCRAPE_TIMEOUT_S
) -> httpx.Response:
    """The first answer of `path` with this status: for a state the server reaches by itself."""
    async with asyncio.timeout(timeout_s):
        while (response := await http.get(path)).status_code != status_code:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        return response
