"""The TaskStore port: the truth about every task and result. Adapters:
`sqlite.SQLiteTaskStore` (embedded, and several processes on one machine) and
`mongo.MongoTaskStore` (collections `processingTasks` and `processingResults`).

Every state change is one conditional, atomic write, so any number of gateways, dispatchers
and result writers may race on the same task and it still moves only forward. The moves are
shared.lifecycle's; each adapter derives its write preconditions from it.

Delivery bookkeeping is separate from the status the spec shows: `delivery` is `queued`
(waiting for its drone) or `delivered` (a drone holds it). Releasing a delivered task puts it
back to `queued` and keeps its status, because status never moves backwards. Only an
in-progress timeout releases one, so `attempts` (one per claim) counts a first delivery plus
each timeout: a drone that drops keeps its tasks delivered and is sent them again.

How outcomes come back, for every method:
- Lookups (get_task, get_result, and the listings) return None, or nothing, when absent.
- Commands a caller asks for on a task (apply_status, save_result, cancel) return an outcome
  on success and raise from the TaskError tree when refused: TaskNotFound, TaskNotYours,
  TaskAlreadyFinished or StatusNotReportable, with the task as it stands in `.task`.
- Delivery bookkeeping (mark_dispatched, claim, release) returns the task, or None when the
  write did not apply. Losing that race is their normal case (a duplicate or late message,
  a task cancelled meanwhile), it sits on the hot path of every message, and every caller
  answers it alike, by dropping the message, so no reason is worth an exception there.
- create_task is idempotent: a replay is an outcome (`created=False`), not a refusal.
- Token bookkeeping (record_token, revoke_token, …) keeps the tokens `droneflow token create`
  issued and the jtis revoked, so that every gateway refuses a revoked token.
Any method raises StoreUnavailable for transient failures, and nothing driver-specific.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from shared.lifecycle import ErrorCode
from shared.models import NewTask, ResultRecord, TaskRecord


@dataclass(frozen=True, slots=True)
class CreateOutcome:
    task: TaskRecord
    created: bool
    """False when the (app_id, idempotency_key) pair already named a task: that one is returned."""


@dataclass(frozen=True, slots=True)
class ResultOutcome:
    task: TaskRecord
    """The task the result ended."""
    result: ResultRecord
    """The result as stored (an adapter may have normalised its result_id)."""


@dataclass(frozen=True, slots=True)
class StatusOutcome:
    task: TaskRecord
    """The task with the status applied: the app is to hear of it."""


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    task: TaskRecord
    was_delivered: bool
    """True when a drone held the task at the moment it was cancelled."""


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An issued token as the store keeps it (never the token itself). A jti revoked without
    having been recorded (a token minted elsewhere) has only `jti` and `revoked_at`."""

    jti: str
    sub: str | None = None
    role: str | None = None
    drones: tuple[str, ...] | None = None
    issued_at: str | None = None
    expires_at: str | None = None
    revoked_at: str | None = None


@dataclass(frozen=True, slots=True)
class TaskPage:
    tasks: list[TaskRecord]
    next_cursor: str | None


PresenceKind = Literal["drone", "application"]


@dataclass(frozen=True, slots=True)
class Presence:
    """One live connection as its gateway announces it, so that every gateway lists the fleet."""

    session_id: str
    """Unique per connection (drones) or per application and gateway: the key of the entry."""
    kind: PresenceKind
    client_id: str
    gateway: str
    connected_at: str
    last_seen: str
    capacity: int = 0
    held: int = 0


class TaskStore(Protocol):
    # --- creating and reading -------------------------------------------------------------
    async def create_task(self, new: NewTask) -> CreateOutcome:
        """Insert a pending, queued task (attempts 0). Idempotent per (app_id, idempotency_key)."""
        ...

    async def get_task(self, task_id: str) -> TaskRecord | None: ...

    async def pending_for_drone(
        self, drone_id: str, limit: int, *, app_id: str | None = None
    ) -> list[TaskRecord]:
        """Tasks in status `pending` for the drone, highest priority first, then oldest first;
        only those of `app_id` when it is given."""
        ...

    async def list_tasks(
        self,
        *,
        app_id: str | None,
        status: str | None,
        updated_since: str | None,
        limit: int,
        cursor: str | None,
    ) -> TaskPage:
        """Tasks ordered by (updated_at, task_id); `cursor` is the opaque next_cursor of the
        previous page. Raises ValueError for a cursor this store did not issue."""
        ...

    async def count_pending(self, app_id: str, at_most: int) -> int:
        """How many of the app's tasks are in status `pending`, counting no further than
        `at_most`: an index range scan whose cost that bound caps, whatever the backlog."""
        ...

    async def get_result(self, task_id: str) -> ResultRecord | None: ...

    async def results_for_drone(
        self, drone_id: str, limit: int, *, app_id: str | None = None
    ) -> list[ResultRecord]:
        """Newest first; only results of tasks of `app_id` when it is given."""
        ...

    # --- dispatch and delivery ------------------------------------------------------------
    async def mark_dispatched(self, task_id: str) -> TaskRecord | None:
        """The dispatcher is about to route the task to its drone's queue. Returns the task if it
        is non-terminal and queued (stamping dispatched_at), else None: drop the message."""
        ...

    async def stamp_dispatched(self, task_ids: Sequence[str]) -> None:
        """The dispatcher routed these tasks (their messages are in their drones' queues): stamp
        dispatched_at on each one still non-terminal and queued, and leave the rest (unknown,
        ended, already claimed) as they are. mark_dispatched without its answer, for a
        dispatcher that routes from the message alone: a stale one is dropped by the claim."""
        ...

    async def incarnation(self) -> str | None:
        """Which life of the store answers now: a value that changes when the store may have
        lost writes it had acknowledged (MongoDB: the primary restarted, or another member
        became primary, and the writes made without the journal may be gone). A routing stamp
        can outlive the claim that followed it there, and the dispatcher routes every waiting
        task again when it sees this change. None when the store cannot tell."""
        ...

    async def routed_incarnation(self) -> str | None:
        """The incarnation whose waiting tasks a dispatcher last routed again (or first saw),
        as `record_routed_incarnation` left it; None if never recorded. Kept in the store, so
        that a dispatcher that started after the store's restart, with no memory of the life
        before, still sees the change."""
        ...

    async def record_routed_incarnation(self, incarnation: str) -> None:
        """Every task waiting in the store's life `incarnation` has been routed in it."""
        ...

    async def undispatched(self, older_than: str, limit: int) -> list[TaskRecord]:
        """Non-terminal queued tasks never routed (dispatched_at unset) and last updated before
        `older_than`: their intake message may have been lost, so the dispatcher re-sends it."""
        ...

    async def routed_before(self, routed_before: str, limit: int) -> list[TaskRecord]:
        """Non-terminal queued tasks last routed (dispatched_at) before `routed_before`, oldest
        routing first: still waiting in a drone's queue. Aging re-routes them."""
        ...

    async def reset_dispatch(self) -> int:
        """Clear dispatched_at on every non-terminal queued task, so they are routed again.
        For a broker that lost its messages in a restart. Returns how many."""
        ...

    async def claim(self, task_id: str, drone_id: str) -> TaskRecord | None:
        """queued → delivered for this drone, attempts + 1, delivered_at = now. None when the task
        is unknown, for another drone, terminal, already delivered or past its ttl_s: the
        caller drops the message. At most one concurrent claim of a queued task succeeds."""
        ...

    async def release(
        self,
        task_id: str,
        drone_id: str,
        *,
        reason: ErrorCode | None = None,
        attempt: int | None = None,
    ) -> TaskRecord | None:
        """The task's in-progress timeout ran out while the drone held it. `attempt` fences the
        release to one delivery (the task's `attempts` when it was claimed): a sweep that read
        the task before it was delivered again must not release the newer delivery. If it was
        delivered to this drone and is not terminal: back to queued with dispatched_at unset,
        or, when attempts ≥ max_attempts, to failed with error_code `max_attempts`. Returns
        the updated task, or None when nothing changed. A drone's disconnect releases nothing:
        its tasks stay delivered to it, so a link flap costs no attempt (see `held_by`)."""
        ...

    async def held_by(self, drone_id: str) -> list[TaskRecord]:
        """Non-terminal tasks delivered to this drone, oldest delivery first: what a new
        session of the drone sends it again (resumed), with the same attempt number."""
        ...

    async def overdue(self, now: str, limit: int) -> list[TaskRecord]:
        """Delivered, non-terminal tasks whose delivered_at + timeout_s is before `now`."""
        ...

    async def expire(self, now: str, limit: int) -> list[TaskRecord]:
        """Fail (error_code `expired`) queued tasks in status pending whose created_at + ttl_s is
        before `now`, and return them."""
        ...

    # --- drone reports ----------------------------------------------------------------------
    async def apply_status(self, task_id: str, drone_id: str, status: str) -> StatusOutcome:
        """A drone's status update. Only `processing` is a status a drone may report (results
        end a task); repeating it is a progress report and is applied again. Raises
        StatusNotReportable for any other status, TaskNotFound, TaskNotYours when the task is
        another drone's, and TaskAlreadyFinished when it is terminal; none changes the task."""
        ...

    async def save_result(self, result: ResultRecord) -> ResultOutcome:
        """Store a drone's result and end its task: completed, or failed with `drone_error`.
        The caller checks that the drone owns the task. Raises TaskNotFound, and
        TaskAlreadyFinished when the task is terminal (a second result, or one after cancel):
        that result is not stored, and `.result` is the one stored before, if any."""
        ...

    async def cancel(self, task_id: str) -> CancelOutcome:
        """Cancel a non-terminal task (error_code `cancelled`). Raises TaskNotFound, and
        TaskAlreadyFinished when the task is terminal (REST answers 409)."""
        ...

    # --- notification bookkeeping ----------------------------------------------------------
    async def mark_notified(self, task_ids: Sequence[str]) -> None:
        """The owning application was sent the task's final state."""
        ...

    async def unnotified(self, limit: int) -> list[tuple[TaskRecord, ResultRecord | None]]:
        """Terminal tasks whose final state no application has been sent yet, oldest first."""
        ...

    # --- tokens ----------------------------------------------------------------------------
    async def record_token(self, token: TokenRecord) -> None:
        """Remember an issued token (its `revoked_at` is ignored). Recording a jti again
        updates its fields and keeps a revocation already made."""
        ...

    async def revoke_token(self, jti: str) -> TokenRecord:
        """Revoke the token with this jti, recorded or not (one minted elsewhere is revoked
        all the same). Revoking again keeps the first `revoked_at`. Returns the record."""
        ...

    async def list_tokens(self, limit: int) -> list[TokenRecord]:
        """Recorded tokens newest issued first, revoked ones with `revoked_at`; jtis revoked
        without a record come last."""
        ...

    async def token_revoked(self, jti: str) -> bool:
        """Whether the jti was revoked: asked on each request that carries a token."""
        ...

    async def revoked_since(self, since: str) -> list[str]:
        """The jtis revoked at or after `since`: gateways poll it to close live sockets."""
        ...

    # --- presence: who is connected, to any gateway -----------------------------------------
    async def put_presence(
        self,
        gateway: str,
        entries: Sequence[Presence],
        ttl_s: float,
        *,
        gone: Sequence[str] = (),
        complete: bool = False,
    ) -> None:
        """Announce `gateway` live for `ttl_s` from now, and with it every entry of it held
        here: a gateway renews all its entries in one cheap step, and those of one that stopped
        calling (it died) drop out of `live_presence` together once its time runs out.

        Insert or replace each of `entries` (by session_id; each names `gateway`) and forget
        the entries `gone` (unknown ids are ignored), so a gateway writes only what changed.
        With `complete`, `entries` are all of the gateway's and every other entry of it is
        forgotten: a gateway says so at its first call, and when its last announcement may have
        expired, since the entries of an expired gateway may be deleted by any call here."""
        ...

    async def live_presence(self, kind: PresenceKind) -> list[Presence]:
        """Entries of `kind` whose gateway's announcement has not expired, ordered by client_id,
        then connected_at."""
        ...

    async def count_queued(self, drone_ids: Sequence[str]) -> dict[str, int]:
        """For each drone: its tasks in status `pending` that no drone holds (delivery
        `queued`), i.e. waiting their turn. Every id asked for is a key, 0 when none wait."""
        ...
