"""Prometheus metrics. Gateways serve them on /metrics; the dispatcher and result writer on
DRONEFLOW_METRICS_PORT when it is set."""

from prometheus_client import Counter, Gauge

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
