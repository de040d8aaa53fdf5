"""The queues and exchanges the adapter declares (drawn in the package docstring)."""

from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustChannel

from shared.broker.queues import Queues, QueueSpec


async def wait_ready(channel: AbstractRobustChannel) -> None:
    # During a reconnect the channel is closed and a publish would fail at once; waiting
    # (bounded by the caller's timeout) rides out a short outage instead.
    if channel.is_closed:
        await channel.ready()


class Topology:
    """Declares queues from their QueueSpecs, the dead letters and topic exchanges, and keeps
    which of them are known to exist so that each is declared once per connection."""

    def __init__(self, queues: Queues) -> None:
        self._queues = queues
        self._dlx_name = f"{queues.prefix}.dlx"
        self.declared: set[str] = set()
        self.topic_exchanges: dict[str, AbstractExchange] = {}

    def forget(self, *_: object) -> None:
        self.declared.clear()
        self.topic_exchanges.clear()

    def arguments(self, spec: QueueSpec) -> dict[str, Any]:
        # Classic, because priorities need a classic queue; explicit, in case the server's
        # default queue type is quorum.
        arguments: dict[str, Any] = {"x-queue-type": "classic"}
        if spec.name != self._queues.dead_letters.name:
            arguments["x-dead-letter-exchange"] = self._dlx_name
        if spec.max_priority is not None:
            arguments["x-max-priority"] = spec.max_priority
        if spec.message_ttl_s is not None:
            arguments["x-message-ttl"] = round(spec.message_ttl_s * 1000)
        return arguments

    async def declare_dead_letters(self, channel: AbstractRobustChannel) -> None:
        # A headers exchange, so that only rejected messages become dead letters: queues
        # dead-letter expired messages too, and an app notification that expired after 24 h
        # is not a poison message. "all-with-x" (RabbitMQ >= 3.10) is needed because plain
        # "all" ignores x- headers when matching.
        dlx = await channel.declare_exchange(
            self._dlx_name, aio_pika.ExchangeType.HEADERS, durable=True
        )
        spec = self._queues.dead_letters
        queue = await channel.declare_queue(spec.name, durable=True, arguments=self.arguments(spec))
        await queue.bind(
            dlx,
            routing_key="",
            arguments={"x-match": "all-with-x", "x-first-death-reason": "rejected"},
        )
        self.declared.add(spec.name)

    async def ensure_declared(self, channel: AbstractRobustChannel, spec: QueueSpec) -> None:
        if spec.name in self.declared:
            return
        await wait_ready(channel)
        # robust=False: the queue is durable, and consumer channels redeclare their own queues;
        # re-declaring every queue ever published to on each reconnect would slow recovery.
        await channel.declare_queue(
            spec.name, durable=True, arguments=self.arguments(spec), robust=False
        )
        self.declared.add(spec.name)

    @staticmethod
    async def declare_topic(
        channel: AbstractRobustChannel, topic: str, *, robust: bool
    ) -> AbstractExchange:
        # Durable, so that a cached exchange still exists after RabbitMQ restarts; publishing
        # to a missing exchange would close the publisher channel.
        return await channel.declare_exchange(
            topic, aio_pika.ExchangeType.FANOUT, durable=True, robust=robust
        )
