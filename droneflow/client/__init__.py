"""The Python SDK: AppClient for applications, DroneWorker for drones, and a synchronous
facade (SyncAppClient) for scripts."""

from droneflow.client.app import AppClient
from droneflow.client.errors import (
    ClientError,
    ConnectionRefused,
    FrameTooLarge,
    RequestFailed,
    Superseded,
    TaskFailed,
    TaskRejected,
)
from droneflow.client.handles import TaskHandle, TaskResult, TaskUpdate
from droneflow.client.link import Backoff
from droneflow.client.sync import SyncAppClient, SyncTaskHandle
from droneflow.client.worker import DroneWorker, Task

__all__ = [
    "AppClient",
    "Backoff",
    "ClientError",
    "ConnectionRefused",
    "DroneWorker",
    "FrameTooLarge",
    "RequestFailed",
    "Superseded",
    "SyncAppClient",
    "SyncTaskHandle",
    "Task",
    "TaskFailed",
    "TaskHandle",
    "TaskRejected",
    "TaskResult",
    "TaskUpdate",
]
