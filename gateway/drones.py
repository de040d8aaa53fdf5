"""What a drone reports over its socket, checked and sent on to the result writer. The drone
socket's route frames and parses; the application side's counterpart is `tasks.py`.

A refused report raises, and nothing is published:

TaskError (shared.errors)
├── TaskNotFound              no such task
├── TaskNotYours              the task is assigned to another drone
├── StatusNotReportable       a status the lifecycle does not let a drone report
└── ReportRefused             a report the protocol does not allow
    ├── DroneIdMismatch       data.drone_id names another drone than the socket's path
    ├── InvalidTimestamp      data.timestamp is not ISO 8601
    └── NotDelivered          the task waits in its queue: no drone holds it yet
"""

from gateway.connections import ClientSocket, DroneSession
from shared.broker import Broker
from shared.clock import normalize_timestamp, now_iso
from shared.errors import StatusNotReportable, TaskError, TaskNotFound, TaskNotYours
from shared.lifecycle import DRONE_REPORTABLE
from shared.models import TaskRecord
from shared.protocol import DroneResult, DroneStatusUpdate, encode_drone_event
from shared.settings import Settings
from shared.store import TaskStore


class ReportRefused(TaskError):
    pass


class DroneIdMismatch(ReportRefused):
    pass


class InvalidTimestamp(ReportRefused):
    pass


class NotDelivered(ReportRefused):
    pass


class DroneService:
    def __init__(self, settings: Settings, broker: Broker, store: TaskStore) -> None:
        self.settings = settings
        self.broker = broker
        self.store = store
        self.queues = settings.queues

    def session(self, drone_id: str, socket: ClientSocket, capacity: int) -> DroneSession:
        return DroneSession(drone_id, socket, capacity, self.broker, self.store, self.queues)

    async def report_result(self, session: DroneSession, result: DroneResult) -> None:
        task = await self._owned_task(session, result.task_id, result.drone_id)
        if task.is_terminal:
            # Ended already (cancelled, timed out for good, or a second result): acknowledged and
            # nothing to store, so nothing to publish, nor to ask the drone to retry if the
            # broker is down.
            return
        if result.timestamp is not None:
            try:
                result.timestamp = normalize_timestamp(result.timestamp)
            except ValueError:
                raise InvalidTimestamp(result.task_id) from None
        await self._publish(session, task, result)
        await session.finished(task.task_id)

    async def report_status(self, session: DroneSession, update: DroneStatusUpdate) -> None:
        if update.status not in DRONE_REPORTABLE:
            raise StatusNotReportable(update.task_id)
        task = await self._owned_task(session, update.task_id, update.drone_id)
        await self._publish(session, task, update)

    async def _publish(
        self, session: DroneSession, task: TaskRecord, report: DroneResult | DroneStatusUpdate
    ) -> None:
        """On to the result writer, with who reported, whose task it is, and when."""
        event = encode_drone_event(session.drone_id, task.app_id, now_iso(), report)
        await self.broker.publish(self.queues.drone_events, event)

    async def _owned_task(
        self, session: DroneSession, task_id: str, claimed_drone: str | None
    ) -> TaskRecord:
        if claimed_drone is not None and claimed_drone != session.drone_id:
            raise DroneIdMismatch(task_id)
        task = session.held.get(task_id)
        if task is not None:
            return task
        task = await self.store.get_task(task_id)
        if task is None:
            raise TaskNotFound(task_id)
        if task.drone_id != session.drone_id:
            raise TaskNotYours(task_id)
        # Only the drone that holds the delivery reports on a live task (through this session
        # or another of the same drone); a task still queued was never sent to anyone.
        if not task.is_terminal and task.delivery != "delivered":
            raise NotDelivered(task_id)
        return task
