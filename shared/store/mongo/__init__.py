"""MongoTaskStore: the TaskStore in MongoDB, collections `processingTasks` and
`processingResults` as the spec names them. The only package that imports pymongo.

Every transition is one `find_one_and_update` whose filter is the precondition (status,
delivery, drone), so racing writers on one document serialise in the server and exactly one
wins. Where the new value depends on the old one (attempts, deadlines, max_attempts) the update
is a pipeline, still one atomic write.

    documents.py     collection names, indexes, projections, documents ⇄ records
    indexes.py       indexes made to match their definitions on start-up
    errors.py        pymongo and bson errors → the StoreError tree
    transitions.py   the atomic find_one_and_update and its pipeline updates
    results.py       save_result's two writes, in the order that keeps them safe
    store.py         MongoTaskStore, the adapter
"""

from shared.store.mongo.documents import (
    DEFAULT_DATABASE,
    LIVE,
    RESULT_INDEXES,
    RESULTS,
    TASK_INDEXES,
    TASKS,
    Document,
)
from shared.store.mongo.store import MongoTaskStore

__all__ = [
    "DEFAULT_DATABASE",
    "LIVE",
    "RESULTS",
    "RESULT_INDEXES",
    "TASKS",
    "TASK_INDEXES",
    "Document",
    "MongoTaskStore",
]
