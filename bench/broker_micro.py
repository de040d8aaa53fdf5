"""Micro-benchmark of the InMemoryBroker hot path: publish → consume → ack, 100k messages.

    python bench/broker_micro.py [--messages 100000] [--prefetch 256] [--runs 3]

Prints the median messages/s of the runs. A message counts once its handler has acked it.
"""

import argparse
import asyncio
import statistics
import time

from shared.broker import Delivery
from shared.broker.memory import InMemoryBroker
from shared.broker.queues import Queues


async def one_run(messages: int, prefetch: int) -> float:
    queues = Queues(prefix="bench")
    queue = queues.intake  # a priority queue, like the intake and drone queues
    body = b'{"task_id":"t-0123456789abcdef","drone_id":"drone-1"}'
    async with InMemoryBroker(queues) as broker:
        done = asyncio.get_running_loop().create_future()
        handled = 0

        async def handler(delivery: Delivery) -> None:
            nonlocal handled
            await delivery.ack()
            handled += 1
            if handled == messages:
                done.set_result(None)

        subscription = await broker.consume(queue, handler, prefetch=prefetch)
        started = time.perf_counter()
        for i in range(messages):
            await broker.publish(queue, body, priority=i % 5 + 1)
            if i % prefetch == 0:
                await asyncio.sleep(0)  # let consumers run while publishing, as in a service
        await asyncio.wait_for(done, timeout=120)
        elapsed = time.perf_counter() - started
        await subscription.cancel()
    return messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rates = [asyncio.run(one_run(args.messages, args.prefetch)) for _ in range(args.runs)]
    print(
        f"InMemoryBroker publish→consume→ack: {statistics.median(rates):,.0f} messages/s "
        f"(median of {args.runs} runs of {args.messages:,}; runs: "
        + ", ".join(f"{rate:,.0f}" for rate in rates)
        + ")"
    )


if __name__ == "__main__":
    main()
