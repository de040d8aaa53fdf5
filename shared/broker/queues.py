"""Queue and topic names: what the services publish to and consume from, under one prefix.
Adapters declare each queue on first use from its QueueSpec."""

from dataclasses import dataclass

from shared.models import MAX_PRIORITY


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A named work queue. Adapters declare it on first use with these arguments."""

    name: str
    max_priority: int | None = None
    message_ttl_s: float | None = None


@dataclass(frozen=True, slots=True)
class Queues:
    """Queue and topic names under one prefix, so test runs never share broker state."""

    prefix: str = "droneflow"
    notification_ttl_s: float = 24 * 3600

    @property
    def intake(self) -> QueueSpec:
        """New and released tasks, on their way to the dispatcher."""
        return QueueSpec(f"{self.prefix}.tasks", max_priority=MAX_PRIORITY)

    @property
    def drone_events(self) -> QueueSpec:
        """Results and status updates from drones, on their way to the result writer."""
        return QueueSpec(f"{self.prefix}.drone-events")

    def drone(self, drone_id: str) -> QueueSpec:
        return QueueSpec(f"{self.prefix}.drone.{drone_id}", max_priority=MAX_PRIORITY)

    def app(self, app_id: str) -> QueueSpec:
        return QueueSpec(f"{self.prefix}.app.{app_id}", message_ttl_s=self.notification_ttl_s)

    @property
    def dead_letters(self) -> QueueSpec:
        return QueueSpec(f"{self.prefix}.dead-letters")

    @property
    def control(self) -> str:
        """Broadcast topic every gateway hears: cancellations and timeouts of held tasks."""
        return f"{self.prefix}.control"
