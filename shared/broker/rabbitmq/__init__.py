"""The RabbitMQ adapter of the Broker port, on aio-pika. The only package that imports aio_pika.

Topology, declared on first use from each QueueSpec:

    <queue>            durable classic queue; x-max-priority, x-message-ttl (ms) and
                       x-dead-letter-exchange=<prefix>.dlx
    <prefix>.dlx       headers exchange → <prefix>.dead-letters, for rejected messages only
    <topic>            durable fanout exchange; each subscriber binds its own exclusive queue

One robust connection (`connect_robust`) carries everything. It reconnects by itself, and its
robust channels redeclare their queues, exchanges and bindings and restart their consumers, so
consumers and topic subscriptions resume after RabbitMQ comes back. Its socket writes are
coalesced over `write_window_s` (see shared/broker/coalescing_writer.py).

Consumers share a few channels. A gateway may hold 10,000 drone consumers and RabbitMQ allows
2047 channels per connection, so one channel per consumer (aio-pika's examples) does not scale.
basic.qos with global=False sets the prefetch of each consumer started afterwards on that
channel, so channels are pooled by prefetch value and every consumer keeps its own prefetch.
A pool grows to `channels_per_pool` channels before a channel takes a second consumer: aiormq
holds a channel's lock from a basic.consume or basic.cancel until its reply, so consumers that
start and stop often (drone sessions) would otherwise wait for each other's round trips.

Modules:

    broker.py       RabbitMQBroker: the connection's life cycle, the port's methods, publishing
                    with confirms, and the watchdog that re-attaches lost consumers
    consumers.py    work-queue consumers, topic listeners and the deliveries they hand over
    hub.py          what consumers get instead of the broker: their channels, the bound on
                    every wait, their handlers' tasks, and the register of live consumers
    channels.py     the consumer channel pools, which alone count their channels' consumers,
                    and the topic listeners' channel
    topology.py     queue arguments, dead letters and topic exchanges, and what is declared
    connection.py   the robust connection with coalesced socket writes
    errors.py       the driver's errors and their translation into BrokerError/BrokerUnavailable
"""

from shared.broker.rabbitmq.broker import RabbitMQBroker

__all__ = ["RabbitMQBroker"]
