"""Task submission and cancellation, shared by the REST routes and the application socket."""

import logging

from gateway.admission import TaskAdmission
from shared.announce import enqueue, notify_status
from shared.broker import Broker
from shared.broker.queues import Queues
from shared.deadlines import Deadlines
from shared.errors import BrokerUnavailable
from shared.health import Dependency
from shared.ids import new_task_id
from shared.metrics import TASKS_SUBMITTED, task_created, task_finished
from shared.models import NewTask, TaskRecord, construct_trusted
from shared.protocol import ControlMessage, TaskRequest
from shared.settings import Settings
from shared.store import CreateOutcome, TaskStore

log = logging.getLogger(__name__)


class TaskService:
    def __init__(
        self, settings: Settings, broker: Broker, store: TaskStore, broker_health: Dependency
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.store = store
        self.broker_health = broker_health
        self.queues: Queues = settings.queues
        self.admission = TaskAdmission(settings, store)
        self._publish_deadlines = Deadlines(settings.publish_timeout_s)

    async def submit(self, app_id: str, request: TaskRequest) -> CreateOutcome:
        """Raises LimitExceeded when the app is over its rate or pending limit."""
        # Every field comes from a request validated at the edge.
        new = construct_trusted(
            NewTask,
            {
                "task_id": new_task_id(),
                "app_id": app_id,
                "drone_id": request.drone_id,
                "task_type": request.task_type,
                "input_data": request.input_data,
                "priority": request.priority,
                "max_attempts": request.max_attempts or self.settings.default_max_attempts,
                "timeout_s": request.timeout_s or self.settings.default_timeout_s,
                "ttl_s": request.ttl_s,
                "idempotency_key": request.idempotency_key,
            },
        )
        async with self.admission.admit(app_id) as admitted:
            outcome = await self.store.create_task(new)
            admitted.created = outcome.created
        if outcome.created:
            TASKS_SUBMITTED.inc()
            task_created(outcome.task)
            await self._enqueue(outcome.task)
        return outcome

    async def _enqueue(self, task: TaskRecord) -> None:
        """The task is stored, so it is accepted whatever the broker does: the dispatcher's
        sweep sends on tasks that were never routed. So the publish gets a deadline, and while
        the broker is known to be away only a probe tries it."""
        health = self.broker_health
        if not health.should_try():
            health.deferred()
            return
        try:
            await self._publish_deadlines.run(enqueue(self.broker, self.queues, task))
        except (BrokerUnavailable, TimeoutError) as exc:
            health.failed(str(exc) or "no publish confirm within DRONEFLOW_PUBLISH_TIMEOUT_S")
            health.deferred()
            log.debug("task %s waits for the sweep: %r", task.task_id, exc)

    async def cancel(self, task_id: str) -> TaskRecord:
        """Raises TaskNotFound, or TaskAlreadyFinished when the task was already terminal."""
        outcome = await self.store.cancel(task_id)
        task = outcome.task
        task_finished(task)
        if outcome.was_delivered:
            message = ControlMessage(kind="cancelled", task_id=task_id, drone_id=task.drone_id)
            await self.broker.broadcast(self.queues.control, message.encode())
        await notify_status(self.broker, self.queues, task)
        return task
