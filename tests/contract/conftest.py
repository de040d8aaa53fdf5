"""The `store` fixture: every TaskStore adapter, each fresh per test.

MongoDB runs when `mongodb_url` (tests/conftest.py) finds a server, each test in a database of
its own that is dropped afterwards; otherwise those cases skip with the reason."""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.store import TaskStore
from shared.store.mongo import MongoTaskStore
from shared.store.sqlite import SQLiteTaskStore


@pytest.fixture(params=["sqlite", pytest.param("mongodb", marks=pytest.mark.mongodb)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TaskStore]:
    if request.param == "sqlite":
        async with SQLiteTaskStore(tmp_path / "data" / "droneflow.db") as sqlite_store:
            yield sqlite_store
        return
    url = request.getfixturevalue("mongodb_url")
    database = f"droneflow_test_{uuid.uuid4().hex[:12]}"
    async with MongoTaskStore(url, database=database) as mongo_store:
        try:
            yield mongo_store
        finally:
            await mongo_store.drop_database()
