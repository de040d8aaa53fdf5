"""Reading droneflow's Prometheus counters over HTTP, to wait for work the server did."""

import asyncio

import httpx


async def counter(http: httpx.AsyncClient, name: str) -> float:
    text = (await http.get("/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def wait_counter(
    http: httpx.AsyncClient, name: str, at_least: float, timeout_s: float = 10.0
) -> None:
    async with asyncio.timeout(timeout_s):
        # The server's counters are only observable by asking for them.
        while await counter(http, name) < at_least:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
