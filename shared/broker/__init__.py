"""The Broker port: durable work queues with priorities, manual acks and dead letters, plus a
broadcast topic. Adapters: `memory.InMemoryBroker` (embedded) and `rabbitmq.RabbitMQBroker`;
what both do around a handler (settling for it, draining at shutdown) is in `policy.py`.

The store holds the truth about every task; the broker only carries messages between services.
Every consumer is therefore idempotent: a message may be delivered more than once.
"""

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.broker.queues import QueueSpec

TRANSIENT_RETRY_DELAY_S = 0.5


class Delivery(Protocol):
    """One message handed to a consumer. It is settled once: acked, or rejected."""

    @property
    def body(self) -> bytes: ...

    @property
    def redelivered(self) -> bool:
        """True when this message was delivered before and not acked (consumer died, nack)."""
        ...

    async def ack(self) -> None: ...

    async def reject(self, *, requeue: bool) -> None:
        """requeue=True puts the message back at its place in the queue; False dead-letters it."""
        ...


Handler = Callable[[Delivery], Awaitable[None]]
TopicHandler = Callable[[bytes], Awaitable[None]]
# Called with why the connection was lost, or with None when it is back.
ConnectionListener = Callable[[str | None], None]


def connection_listeners(broker: object) -> list[ConnectionListener] | None:
    """The listeners a broker that reports its connection (RabbitMQBroker) calls on each loss and
    return, to append to; None for one that has no connection to lose (the in-memory broker).
    Not part of the port: only a consumer-only service needs it, to act between calls. The
    health wrapper forwards attribute reads, so this sees through it."""
    listeners: list[ConnectionListener] | None = getattr(broker, "connection_listeners", None)
    return listeners


class Subscription(Protocol):
    async def cancel(self) -> None:
        """Stop deliveries to this consumer. Safe to call from inside its own handler and more
        than once. Deliveries already handed to the handler are still settled by it; any the
        adapter buffered but did not hand over go back to the queue in order."""
        ...


@dataclass(frozen=True, slots=True)
class Outgoing:
    queue: QueueSpec
    body: bytes
    priority: int = 0


class Broker(Protocol):
    """Semantics every adapter keeps (the contract suite in tests/contract checks each one):

    - Queues are declared on first use from their QueueSpec; publishing to a queue with no
      consumer keeps the message until one comes (or until `message_ttl_s` runs out).
    - A durable broker keeps a queue's messages through its own restart only when its spec is
      `persistent`; the others may be lost then, and the dispatcher replays them from the store
      (`Queues.restart_marker` tells it so).
    - A queue with `max_priority` hands out higher priorities first, FIFO within a priority.
    - `consume` runs at most `prefetch` handlers of one consumer at a time; with prefetch=1
      messages are handled strictly one after another in queue order.
    - When a handler returns without settling, the adapter acks. When it raises a transient
      error (BrokerUnavailable, StoreUnavailable) the message is requeued after
      TRANSIENT_RETRY_DELAY_S (holding its prefetch slot, so an outage slows consumption
      instead of spinning through redeliveries); any other exception
      dead-letters it into `Queues.dead_letters`.
    - Several consumers on one queue share its messages; each message goes to one of them.
    - `publish` returns once the broker has taken the message (publisher confirm); it raises
      BrokerUnavailable when that cannot happen.
    - Topics are fire-and-forget broadcasts to every current subscriber; nothing is kept.
    """

    @property
    def durable(self) -> bool:
        """Whether accepted messages survive a restart of this process (False for memory)."""
        ...

    async def publish(self, queue: QueueSpec, body: bytes, *, priority: int = 0) -> None: ...

    async def publish_many(self, messages: Sequence[Outgoing]) -> None:
        """Publish all, pipelined; returns once every one is confirmed."""
        ...

    async def consume(
        self, queue: QueueSpec, handler: Handler, *, prefetch: int
    ) -> Subscription: ...

    async def broadcast(self, topic: str, body: bytes) -> None: ...

    async def subscribe(self, topic: str, handler: TopicHandler) -> Subscription: ...

    async def queue_depth(self, queue: QueueSpec) -> int:
        """Messages ready in the queue (not counting those delivered and not yet settled)."""
        ...
