"""MongoTaskStore's write concerns (deploy/OPERATIONS.md, MongoDB): the writes a sweep or a later
step repairs are acknowledged without waiting for the journal, and those whose loss the sweeps
could not repair (a task accepted, a result that ended its task) wait for it: by the URL's write
concern, else by `{w: 1, j: true}` on the test server, a replica set with one voting member,
where that is what the server's default `w: "majority"` means. Seen on the wire, through
PyMongo's command monitoring (mongod's profiler records an update's statements without their
command's writeConcern)."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import pytest
from pymongo import monitoring

from shared.store.mongo import RESULTS, TASKS, MongoTaskStore
from tests.builders import DRONE, create, result_for

pytestmark = pytest.mark.mongodb

UNJOURNALED = (("j", False), ("w", 1))  # a writeConcern as WriteLog gives it
JOURNALED = (("j", True), ("w", 1))  # the majority of a set with one voting member
WRITES = frozenset({"insert", "update", "findAndModify", "delete"})


class WriteLog(monitoring.CommandListener):
    """(collection, command, its writeConcern's sorted items or None) of each write sent to
    the database `watched` while it is set. Registered once: PyMongo has no unregister."""

    def __init__(self) -> None:
        self.watched: str | None = None
        self.writes: list[tuple[str, str, object]] = []
        self.retryable = 0  # writes sent with a transaction number, as retryable writes are

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name != self.watched or event.command_name not in WRITES:
            return
        concern = event.command.get("writeConcern")
        if concern is not None:
            concern = tuple(sorted(concern.items()))
        self.writes.append((event.command[event.command_name], event.command_name, concern))
        self.retryable += "txnNumber" in event.command

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


LOG = WriteLog()
monitoring.register(LOG)  # before any store's client is made: only later clients see it


async def write_concerns(*calls: Callable[[], Awaitable[object]]) -> list[tuple[str, str, object]]:
    """What write_log records of the calls, run concurrently."""
    LOG.writes, LOG.retryable = [], 0
    await asyncio.gather(*(call() for call in calls))
    assert LOG.writes, "no write was sent"
    return LOG.writes


@contextlib.asynccontextmanager
async def watched_store(mongodb_url: str, option: str) -> AsyncIterator[MongoTaskStore]:
    """A store on the URL with `option` added to its query, in a database WriteLog watches."""
    parts = urlsplit(mongodb_url)
    url = urlunsplit(parts._replace(query="&".join(q for q in (parts.query, option) if q)))
    LOG.watched = f"droneflow_wc_{uuid.uuid4().hex[:12]}"
    try:
        async with MongoTaskStore(url, database=LOG.watched) as store:
            try:
                yield store
            finally:
                await store.drop_database()
    finally:
        LOG.watched = None


@pytest.mark.parametrize("concurrent", [1, 4], ids=["one at a time", "batched"])
async def test_mongo_store_journals_only_what_no_sweep_repairs(
    mongodb_url: str, concurrent: int
) -> None:
    async with watched_store(mongodb_url, "") as store:
        await _round_trip(store, concurrent)


async def _round_trip(store: MongoTaskStore, concurrent: int) -> None:
    # Given tasks made durable (the URL sets no write concern; the set has one voting member)
    created = await write_concerns(*[lambda: create(store)] * concurrent)
    assert {concern for _, _, concern in created} == {JOURNALED}, created
    ids = [task.task_id for task in await store.pending_for_drone(DRONE, concurrent)]

    # When they are routed, claimed and started, Then no write waits for the journal
    for step in (
        lambda task_id: lambda: store.mark_dispatched(task_id),
        lambda task_id: lambda: store.claim(task_id, DRONE),
        lambda task_id: lambda: store.apply_status(task_id, DRONE, "processing"),
    ):
        writes = await write_concerns(*map(step, ids))
        assert {concern for _, _, concern in writes} == {UNJOURNALED}, writes

    # When their results are saved, Then ending the task is journaled and only the copy in
    # processingResults (repaired from the task) skips the journal
    writes = await write_concerns(*[lambda i=i: store.save_result(result_for(i)) for i in ids])
    assert {(collection, concern) for collection, _, concern in writes} == {
        (TASKS, JOURNALED),
        (RESULTS, UNJOURNALED),
    }, writes

    # When the app has heard of them, Then that is journaled (else it would hear again)
    writes = await write_concerns(lambda: store.mark_notified(ids))
    assert {concern for _, _, concern in writes} == {JOURNALED}, writes


@pytest.mark.parametrize(
    ("option", "durable"),
    [
        ("", JOURNALED),
        ("w=majority", (("w", "majority"),)),
        ("journal=true", (("j", True),)),
        ("w=1&journal=false", UNJOURNALED),
    ],
    ids=["none", "majority", "journal", "neither"],
)
async def test_mongo_store_keeps_a_write_concern_the_url_sets(
    mongodb_url: str, option: str, durable: object
) -> None:
    async with watched_store(mongodb_url, option) as store:
        # Given a store on a URL that sets a write concern or none, When it creates a task and
        # ends it
        created = list(await write_concerns(lambda: create(store)))
        (task_id,) = [task.task_id for task in await store.pending_for_drone(DRONE, 1)]
        await store.claim(task_id, DRONE)  # unjournaled whatever the URL says: not checked
        ended = await write_concerns(lambda: store.save_result(result_for(task_id)))
        # Then both writes carry the URL's concern, or the lone voter's journal
        tasks_writes = [w for w in created + ended if w[0] == TASKS]
        assert {concern for _, _, concern in tasks_writes} == {durable}, tasks_writes


@pytest.mark.parametrize(
    ("option", "retryable"), [("", False), ("retryWrites=true", True)], ids=["default", "asked"]
)
async def test_mongo_store_writes_are_retryable_only_when_the_url_asks(
    mongodb_url: str, option: str, retryable: bool
) -> None:
    async with watched_store(mongodb_url, option) as store:
        # Given a store on a URL that sets retryWrites or not, When it writes
        writes = await write_concerns(lambda: create(store))
        # Then the writes carry a transaction number only when the URL asked for it
        assert (LOG.retryable == len(writes)) if retryable else LOG.retryable == 0
