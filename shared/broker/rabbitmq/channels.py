"""The pooled consumer channels and the channel of topic listeners."""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection, AbstractRobustQueue


@dataclass(eq=False)
class ChannelSlot:
    """One pooled consumer channel; all its consumers share one prefetch value. Its pool
    alone counts its consumers, through `acquire` and `release`."""

    channel: AbstractRobustChannel
    consumers: int = 0
    queues: dict[str, AbstractRobustQueue] = field(default_factory=dict)

    async def declare_queue(self, name: str, arguments: dict[str, Any]) -> AbstractRobustQueue:
        """The queue as this channel knows it, declared once per channel: robust=True, so that
        the channel redeclares it before it restarts the queue's consumers."""
        queue = self.queues.get(name)
        if queue is None:
            declared = await self.channel.declare_queue(name, durable=True, arguments=arguments)
            queue = self.queues.setdefault(name, declared)
        return queue


class ChannelPools:
    """Consumer channels pooled by prefetch value; the package docstring says why."""

    def __init__(self, *, consumers_per_channel: int, channels_per_pool: int) -> None:
        self._consumers_per_channel = consumers_per_channel
        self._channels_per_pool = channels_per_pool
        self._pools: dict[int, list[ChannelSlot]] = {}
        self._topic_channel: AbstractRobustChannel | None = None
        self._lock = asyncio.Lock()

    async def topic_channel(self, connection: AbstractRobustConnection) -> AbstractRobustChannel:
        async with self._lock:
            if self._topic_channel is None or self._topic_channel.is_closed:
                self._topic_channel = await connection.channel(publisher_confirms=False)
            return self._topic_channel

    async def acquire(self, connection: AbstractRobustConnection, prefetch: int) -> ChannelSlot:
        """A channel for one more consumer with this prefetch; `release` it when it stops."""
        async with self._lock:
            # A channel that stayed closed after a reconnect is dead: use it no more.
            slots = self._pools[prefetch] = [
                s
                for s in self._pools.get(prefetch, [])
                if s.consumers > 0 or not s.channel.is_closed
            ]
            live = [s for s in slots if not s.channel.is_closed]
            if live:
                slot = min(live, key=lambda s: s.consumers)
                if slot.consumers == 0 or (
                    len(slots) >= self._channels_per_pool
                    and slot.consumers < self._consumers_per_channel
                ):
                    slot.consumers += 1
                    return slot
            channel = await connection.channel(publisher_confirms=False)
            try:
                # global_=False: the prefetch applies to each consumer started on this channel.
                # The robust channel re-applies it before restarting consumers on a reconnect.
                await channel.set_qos(prefetch_count=prefetch, global_=False)
            except BaseException:
                await channel.close()
                raise
            slot = ChannelSlot(channel, consumers=1)
            slots.append(slot)
            return slot

    def release(self, slot: ChannelSlot) -> None:
        slot.consumers -= 1
