"""Queue and topic names: what the services publish to and consume from, under one prefix.
Adapters declare each queue on first use from its QueueSpec."""

from dataclasses import dataclass

from shared.models import MAX_PRIORITY


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A named work queue. Adapters declare it on first use with these arguments.

    `persistent=False` marks a hop whose messages the store can replay: a durable broker keeps
    them in memory only (no write to disk per message) and loses them in its own restart, after
    which the dispatcher re-routes and re-notifies from the store (see `Queues.restart_marker`).
    """

    name: str
    max_priority: int | None = None
    message_ttl_s: float | None = None
    persistent: bool = True


@dataclass(frozen=True, slots=True)
class Queues:
    """Queue and topic names under one prefix, so test runs never share broker state."""

    prefix: str = "droneflow"
    notification_ttl_s: float = 24 * 3600

    @property
    def intake(self) -> QueueSpec:
        """New and released tasks, on their way to the dispatcher. Transient: every waiting
        task is in the store."""
        return QueueSpec(f"{self.prefix}.tasks", max_priority=MAX_PRIORITY, persistent=False)

    @property
    def drone_events(self) -> QueueSpec:
        """Results and status updates from drones, on their way to the result writer.
        Persistent: until the writer stores it, a result exists only in its message."""
        return QueueSpec(f"{self.prefix}.drone-events")

    def drone(self, drone_id: str) -> QueueSpec:
        """Routed tasks, on their way to the drone's gateway. Transient, as the intake."""
        return QueueSpec(
            f"{self.prefix}.drone.{drone_id}", max_priority=MAX_PRIORITY, persistent=False
        )

    def app(self, app_id: str) -> QueueSpec:
        """Status updates and final states for the application. Transient: a final state is
        in the store until a gateway has handed it to the application (`mark_notified`)."""
        return QueueSpec(
            f"{self.prefix}.app.{app_id}", message_ttl_s=self.notification_ttl_s, persistent=False
        )

    @property
    def restart_marker(self) -> QueueSpec:
        """A durable queue that holds one transient message, which nobody consumes: the broker
        loses it exactly when it may have lost the transient messages of the other queues (a
        restart of the node; or the queue deleted or purged by hand). The dispatcher replays
        the transient hops from the store when it finds the queue empty, then puts one back."""
        return QueueSpec(f"{self.prefix}.restart-marker", persistent=False)

    @property
    def dead_letters(self) -> QueueSpec:
        return QueueSpec(f"{self.prefix}.dead-letters")

    @property
    def control(self) -> str:
        """Broadcast topic every gateway hears: cancellations and timeouts of held tasks."""
        return f"{self.prefix}.control"
