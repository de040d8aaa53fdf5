"""What RabbitMQ's own CPU pays per message for the ways droneflow uses it, on a fresh vhost:

- `persistent` / `transient`: a confirmed publish (100 outstanding) to a durable priority queue,
  consumed and acked by one consumer (prefetch 200): the cost of a hop, and what a transient
  hop would save;
- `consumer churn`: the drone-queue pattern of a gateway whose drone is full at every task
  (gateway/connections.py `DroneSession`): basic.qos + basic.consume with the free slots, one
  delivery, its ack, basic.cancel;
- `basic.get`: one message fetched and acked per request, the pattern that would replace it.

Each figure is RabbitMQ's CPU (the node's pid, /proc) and this client's, per message; medians of
`--rounds` alternating rounds. The node is shared: run it on a quiet machine.

    .venv/bin/python bench/rabbitmq_micro.py [--messages 4000] [--rounds 3]
"""

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procfs import cpu_s
from rabbitmq_vhost import fresh_vhost, rabbitmq_pid

BODY = b'{"task_id":"task_019ad0c1f2a3b4c5d6e7f8a9b0c1d2e3","drone_id":"Drone017","priority":3}'
PUBLISH_WINDOW = 100

Workload = Callable[[AbstractChannel, AbstractChannel, AbstractQueue, int], Awaitable[None]]


async def publish(channel: AbstractChannel, queue: AbstractQueue, count: int, mode: int) -> None:
    window = asyncio.Semaphore(PUBLISH_WINDOW)

    async def one() -> None:
        async with window:
            message = aio_pika.Message(BODY, priority=3, delivery_mode=aio_pika.DeliveryMode(mode))
            await channel.default_exchange.publish(message, routing_key=queue.name)

    await asyncio.gather(*(one() for _ in range(count)))


def hop(mode: aio_pika.DeliveryMode) -> Workload:
    async def run(
        publisher: AbstractChannel, consumer: AbstractChannel, queue: AbstractQueue, count: int
    ) -> None:
        received = 0
        all_in = asyncio.get_running_loop().create_future()

        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1
            if received == count and not all_in.done():
                all_in.set_result(None)

        await consumer.set_qos(prefetch_count=200)
        tag = await queue.consume(on_message)
        await publish(publisher, queue, count, mode)
        await all_in
        await queue.cancel(tag)

    return run


async def consumer_churn(
    publisher: AbstractChannel, consumer: AbstractChannel, queue: AbstractQueue, count: int
) -> None:
    await publish(publisher, queue, count, aio_pika.DeliveryMode.PERSISTENT)
    for _ in range(count):
        delivered: asyncio.Future[AbstractIncomingMessage] = (
            asyncio.get_running_loop().create_future()
        )

        async def on_message(
            message: AbstractIncomingMessage,
            delivered: asyncio.Future[AbstractIncomingMessage] = delivered,
        ) -> None:
            delivered.set_result(message)

        await consumer.set_qos(prefetch_count=1)
        tag = await queue.consume(on_message)
        message = await delivered
        # Cancelled before the ack, as the gateway pauses a full drone before claiming: an ack
        # first would free the window for a next delivery.
        await queue.cancel(tag)
        await message.ack()


async def basic_get(
    publisher: AbstractChannel, consumer: AbstractChannel, queue: AbstractQueue, count: int
) -> None:
    await publish(publisher, queue, count, aio_pika.DeliveryMode.PERSISTENT)
    fetched = 0
    while fetched < count:
        message = await queue.get(no_ack=False, fail=False)
        if message is None:  # not yet routed to the queue after its confirm
            await asyncio.sleep(0.001)
            continue
        await message.ack()
        fetched += 1


WORKLOADS: dict[str, Workload] = {
    "persistent": hop(aio_pika.DeliveryMode.PERSISTENT),
    "transient": hop(aio_pika.DeliveryMode.NOT_PERSISTENT),
    "consumer churn": consumer_churn,
    "basic.get": basic_get,
}


async def measure(url: str, node_pid: int, name: str, count: int) -> tuple[float, float, float]:
    """(RabbitMQ µs, client µs, messages/s) per message of one round."""
    connection = await aio_pika.connect(url)
    try:
        publisher = await connection.channel(publisher_confirms=True)
        consumer = await connection.channel()
        queue = await consumer.declare_queue(
            f"micro.{name.replace(' ', '-')}.{os.getpid()}",
            durable=True,
            arguments={"x-max-priority": 10},
        )
        node_before, client_before = cpu_s(node_pid), sum(os.times()[:2])
        started = time.perf_counter()
        await WORKLOADS[name](publisher, consumer, queue, count)
        elapsed = time.perf_counter() - started
        node_s = cpu_s(node_pid) - node_before
        client_s = sum(os.times()[:2]) - client_before
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    return node_s * 1e6 / count, client_s * 1e6 / count, count / elapsed


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    node_pid = rabbitmq_pid()
    if node_pid is None:
        raise SystemExit("rabbitmqctl status shows no OS PID: is RabbitMQ running here?")
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in WORKLOADS}
    with fresh_vhost(args.amqp_url) as url:
        for round_number in range(1, args.rounds + 1):
            for name in WORKLOADS:
                figure = await measure(url, node_pid, name, args.messages)
                figures[name].append(figure)
                print(
                    f"round {round_number} {name:>14}: RabbitMQ {figure[0]:5.0f} µs, "
                    f"client {figure[1]:5.0f} µs per message, {figure[2]:,.0f} messages/s",
                    flush=True,
                )
    print("\n| pattern | RabbitMQ µs/message | client µs/message | messages/s |")
    print("|---|---:|---:|---:|")
    for name, rounds in figures.items():
        node, client, rate = (statistics.median(column) for column in zip(*rounds, strict=True))
        print(f"| {name} | {node:,.0f} | {client:,.0f} | {rate:,.0f} |")
    print(
        "\nchurn and basic.get include the message's persistent publish (as in the first row):"
        " subtract that row for the cost of the pattern alone"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
