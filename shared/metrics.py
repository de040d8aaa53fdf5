"""Prometheus metrics. Gateways serve them on /metrics; the dispatcher and result writer on
DRONEFLOW_METRICS_PORT (shared.service_http), with /healthz and /readyz.

Names follow Prometheus conventions (seconds, `_total` counters). Labels stay few-valued: never
a task, drone or application id. `task_type` is the client's own string, so each process labels
at most MAX_TASK_TYPES of them and counts the rest as `other`.

Latencies come from the timestamps the store keeps on a task (created_at, delivered_at,
finished_at), each observed once, by the process that made the move: the gateway when it
delivers, whoever stores the final state (result writer, dispatcher sweep, cancelling gateway).
In a distributed deployment those stamps come from different hosts' clocks: keep them in sync
(NTP); a negative span from skew is observed as 0."""

import asyncio
from datetime import datetime
from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from shared.broker import Broker
from shared.broker.queues import Queues
from shared.errors import DroneflowError
from shared.models import TaskRecord

TASKS_SUBMITTED = Counter("droneflow_tasks_submitted", "Tasks accepted from applications")
TASKS_ROUTED = Counter("droneflow_tasks_routed", "Tasks the dispatcher put on a drone queue")
TASKS_DELIVERED = Counter("droneflow_tasks_delivered", "Tasks sent to a drone")
TASKS_RELEASED = Counter(
    "droneflow_tasks_released", "Delivered tasks handed back by a drone", ["reason"]
)
RESULTS_STORED = Counter("droneflow_results_stored", "Drone results stored", ["success"])
NOTIFICATIONS_SENT = Counter(
    "droneflow_notifications_sent", "Frames sent to applications from their queues"
)
DRONES_CONNECTED = Gauge("droneflow_drones_connected", "Drone sockets open on this gateway")
APPS_CONNECTED = Gauge("droneflow_apps_connected", "Application sockets open on this gateway")
DEPENDENCY_REFUSALS = Counter(
    "droneflow_dependency_refusals",
    "Requests refused (503, WebSocket `unavailable`) or deferred (accepted, left to the sweep) "
    "because a dependency was unavailable",
    ["dependency", "outcome"],
)
DEPENDENCY_UP = Gauge(
    "droneflow_dependency_up", "1 while a service reaches a dependency", ["dependency", "service"]
)

LATENCY_BUCKETS_S: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    600.0, 1800.0, 3600.0,
)  # fmt: skip
"""From a task run by a drone on the same host (ms) to the default in-progress timeout (1 h)."""

TASK_ROUND_TRIP = Histogram(
    "droneflow_task_round_trip_seconds",
    "From a task's creation to its final state, by that state",
    ["status"],
    buckets=LATENCY_BUCKETS_S,
)
TASK_STAGE = Histogram(
    "droneflow_task_stage_seconds",
    "Time a task spent in one stage: queued (created → first delivered to its drone) and "
    "delivered (last delivered → final state; tasks that ended undelivered have none)",
    ["stage"],
    buckets=LATENCY_BUCKETS_S,
)
TASKS = Counter(
    "droneflow_tasks",
    "Tasks that entered a status: pending (created) and the final ones; pending minus the "
    "final ones is what is in flight",
    ["status", "task_type"],
)
TASK_REDELIVERIES = Counter(
    "droneflow_task_redeliveries",
    "Tasks sent on again: timeout (in-progress timeout ran out, queued for another attempt), "
    "reconnect (resent to a drone's new session), unrouted (intake message presumed lost)",
    ["reason"],
)
REJECTIONS = Counter(
    "droneflow_rejections",
    "Requests refused: HTTP 4xx by status code, WebSocket `error` frames by code",
    ["transport", "reason"],
)
QUEUE_DEPTH = Gauge(
    "droneflow_queue_depth",
    "Messages ready in a shared queue, read from the broker at each scrape",
    ["queue"],
)

MAX_TASK_TYPES: Final = 100
OTHER_LABEL: Final = "other"
QUEUE_DEPTH_TIMEOUT_S: Final = 1.0


class BoundedLabels:
    """The first `limit` distinct values pass as themselves, the rest as `other`: a label fed
    by clients then has at most limit + 1 values, whatever they send."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._passed: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._passed:
            return value
        if len(self._passed) < self.limit:
            self._passed.add(value)
            return value
        return OTHER_LABEL


_queued_stage = TASK_STAGE.labels(stage="queued")
_delivered_stage = TASK_STAGE.labels(stage="delivered")
_round_trip_by_status: dict[str, Histogram] = {}
_task_type_label = BoundedLabels(MAX_TASK_TYPES)
_tasks_by_status_and_type: dict[tuple[str, str], Counter] = {}


def _count_task(status: str, task_type: str) -> None:
    label = _task_type_label(task_type)
    # The labelled children are kept: labels() validates and takes a lock on every call.
    child = _tasks_by_status_and_type.get((status, label))
    if child is None:
        child = TASKS.labels(status=status, task_type=label)
        _tasks_by_status_and_type[(status, label)] = child
    child.inc()


def _seconds_between(start: str, end: str) -> float | None:
    try:
        span_s = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None
    return max(span_s, 0.0)


def task_created(task: TaskRecord) -> None:
    _count_task("pending", task.task_type)


def task_delivered(task: TaskRecord) -> None:
    """A drone was sent the task for a new attempt (not a resend to a reconnected drone)."""
    TASKS_DELIVERED.inc()
    # Only the first delivery has waited since creation; a retry waited since its release,
    # which the store does not keep.
    if task.attempts == 1 and task.delivered_at is not None:
        waited_s = _seconds_between(task.created_at, task.delivered_at)
        if waited_s is not None:
            _queued_stage.observe(waited_s)


def task_finished(task: TaskRecord) -> None:
    """The store just took the task's final state."""
    status, finished_at = task.status, task.finished_at or task.updated_at
    _count_task(status, task.task_type)
    round_trip = _round_trip_by_status.get(status)
    if round_trip is None:
        round_trip = _round_trip_by_status[status] = TASK_ROUND_TRIP.labels(status=status)
    span_s = _seconds_between(task.created_at, finished_at)
    if span_s is not None:
        round_trip.observe(span_s)
    # A task failed for max_attempts was put back in its queue as it timed out, while held.
    held = task.delivery == "delivered" or task.error_code == "max_attempts"
    if held and task.delivered_at is not None:
        held_s = _seconds_between(task.delivered_at, finished_at)
        if held_s is not None:
            _delivered_stage.observe(held_s)


def task_redelivered(reason: str) -> None:
    TASK_REDELIVERIES.labels(reason=reason).inc()


def rejected(transport: str, reason: str) -> None:
    REJECTIONS.labels(transport=transport, reason=reason).inc()


async def refresh_queue_depths(broker: Broker, queues: Queues) -> None:
    """Read the shared queues' depths into QUEUE_DEPTH, just before a scrape. Per-drone and
    per-application queues are left out: one series each would be a series per id. While the
    broker cannot answer, the gauge is emptied rather than left showing stale depths."""
    shared = {
        "intake": queues.intake,
        "drone_events": queues.drone_events,
        "dead_letters": queues.dead_letters,
    }
    try:
        async with asyncio.timeout(QUEUE_DEPTH_TIMEOUT_S):
            depths = await asyncio.gather(*(broker.queue_depth(q) for q in shared.values()))
    except (DroneflowError, TimeoutError):
        QUEUE_DEPTH.clear()
        return
    for name, depth in zip(shared, depths, strict=True):
        QUEUE_DEPTH.labels(queue=name).set(depth)
