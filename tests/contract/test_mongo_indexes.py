"""MongoTaskStore's indexes (shared/store/mongo/documents.py, indexes.py): every query the store
makes is an index scan, as mongod's profiler records it, and a database made by an earlier
version gets the current indexes on start-up instead of refusing to start."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable

import pytest
from pymongo import ASCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from shared.clock import iso_after, now_iso
from shared.store.mongo import (
    RESULT_INDEXES,
    RESULTS,
    TASK_INDEXES,
    TASKS,
    Document,
    MongoTaskStore,
)
from shared.store.mongo.indexes import same_definition
from shared.store.mongo.presence import PRESENCE, PRESENCE_INDEXES
from tests.builders import APP, DRONE, claimed, create, result_for

pytestmark = pytest.mark.mongodb


@pytest.fixture
async def database(mongodb_url: str) -> AsyncIterator[AsyncDatabase[Document]]:
    """A database of this test's own, seen through a client of the test's (not the store's)."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_url)
    db = client[f"droneflow_ix_{uuid.uuid4().hex[:12]}"]
    try:
        yield db
    finally:
        await client.drop_database(db.name)
        await client.close()


async def plans_of(database: AsyncDatabase[Document], call: Awaitable[object]) -> list[str]:
    """The plan summaries (e.g. "IXSCAN { deadline_at: 1 }") of the queries a call made."""
    await database.command("profile", 0)
    await database["system.profile"].drop()
    await database.command("profile", 2)
    await call
    await database.command("profile", 0)
    return [
        entry["planSummary"]
        async for entry in database["system.profile"].find(
            {"ns": {"$in": [f"{database.name}.{TASKS}", f"{database.name}.{RESULTS}"]}}
        )
        if "planSummary" in entry
    ]


async def test_mongo_store_queries_are_all_index_scans(
    mongodb_url: str, database: AsyncDatabase[Document]
) -> None:
    # Given a store holding tasks in every state a sweep looks for
    async with MongoTaskStore(mongodb_url, database=database.name) as store:
        await create(store)  # pending, never routed
        routed = await create(store, ttl_s=60.0)
        assert await store.mark_dispatched(routed.task_id) is not None
        await claimed(store, timeout_s=30.0)  # delivered, with a deadline
        ended = await claimed(store)
        await store.save_result(result_for(ended.task_id))
        await store.cancel((await create(store)).task_id)
        later = iso_after(3600)

        # When each sweep runs, Then it walks its own partial index
        sweeps = {
            "IXSCAN { updated_at: 1 }": store.undispatched(later, 10),
            "IXSCAN { dispatched_at: 1 }": store.routed_before(later, 10),
            "IXSCAN { deadline_at: 1 }": store.overdue(later, 10),
            "IXSCAN { finished_at: 1, task_id: 1 }": store.unnotified(10),
            "IXSCAN { expires_at: 1 }": store.expire(later, 10),
        }
        for index, sweep in sweeps.items():
            plans = await plans_of(database, sweep)
            assert index in plans and not [p for p in plans if "COLLSCAN" in p], plans
        plans = await plans_of(database, store.reset_dispatch())
        assert "IXSCAN { dispatched_at: 1 }" in plans, plans

        # When every other query runs, with each of its optional filters
        async def the_others() -> None:
            await store.held_by(DRONE)
            await store.pending_for_drone(DRONE, 10)
            await store.pending_for_drone(DRONE, 10, app_id=APP)
            await store.count_pending(APP, 10)
            await store.count_queued([DRONE])
            await store.get_result(ended.task_id)
            await store.results_for_drone(DRONE, 10)
            await store.results_for_drone(DRONE, 10, app_id=APP)
            for app_id in (None, APP):
                for status in (None, "pending"):
                    for since in (None, now_iso()):
                        page = await store.list_tasks(
                            app_id=app_id, status=status, updated_since=since, limit=1, cursor=None
                        )
                    await store.list_tasks(
                        app_id=app_id,
                        status=status,
                        updated_since=None,
                        limit=1,
                        cursor=page.next_cursor,
                    )
            await store.mark_notified([ended.task_id])

        plans = await plans_of(database, the_others())

    # Then mongod planned every one of them on an index
    assert len(plans) >= 20
    assert [plan for plan in plans if "COLLSCAN" in plan] == []


async def test_mongo_store_start_replaces_changed_and_retired_indexes(
    mongodb_url: str, database: AsyncDatabase[Document]
) -> None:
    # Given a database an earlier version made: an index since retired, one since made partial
    # under the same name, and one whose name is now used with other keys
    tasks = database[TASKS]
    await tasks.create_indexes(
        [
            IndexModel([("drone_id", ASCENDING)], name="ix_drone_id"),
            IndexModel([("deadline_at", ASCENDING)], name="ix_overdue"),
            IndexModel([("app_id", ASCENDING)], name="ix_app_pending"),  # not partial
            IndexModel([("deadline_at", ASCENDING), ("task_id", ASCENDING)], name="ix_deadline"),
        ]
    )
    await database[RESULTS].create_index([("drone_id", ASCENDING)], name="ix_drone_id")
    await database[PRESENCE].create_index([("expires_at", ASCENDING)], name="ix_expires_at")

    # When three services start on it at once (each drops what it found), and one more later
    async def start() -> None:
        async with MongoTaskStore(mongodb_url, database=database.name):
            pass

    await asyncio.gather(start(), start(), start())
    await start()

    # Then each collection has exactly the indexes the store defines, as it defines them
    for collection, models in (
        (tasks, TASK_INDEXES),
        (database[RESULTS], RESULT_INDEXES),
        (database[PRESENCE], PRESENCE_INDEXES),
    ):
        found = {index["name"]: index async for index in await collection.list_indexes()}
        wanted = {model.document["name"]: model.document for model in models}
        assert set(found) == {"_id_", *wanted}
        for name, definition in wanted.items():
            assert same_definition(found[name], definition), name
