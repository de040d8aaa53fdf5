"""The indexes of a collection, made to match their definitions on start-up.

`create_indexes` leaves an existing index of the same name alone when its definition is the
same, and fails when it differs (IndexOptionsConflict), so a database made by an earlier
version would refuse to start. Here an index whose definition changed is dropped and built
again, and the names an earlier version used and this one retired are dropped.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo import IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import OperationFailure

from shared.store.mongo.documents import Document

INDEX_NOT_FOUND = 27

# The options of an index definition that this store sets; any other the server adds (v, ns)
# is not compared.
_COMPARED_OPTIONS = ("unique", "partialFilterExpression", "sparse", "expireAfterSeconds")


def same_definition(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether an index from listIndexes is the one `wanted` (an IndexModel's document) says."""
    if list(existing["key"].items()) != list(wanted["key"].items()):
        return False
    return all(
        bool(existing.get(option)) == bool(wanted.get(option))
        if option in ("unique", "sparse")
        else existing.get(option) == wanted.get(option)
        for option in _COMPARED_OPTIONS
    )


async def ensure_indexes(
    collection: AsyncCollection[Document],
    indexes: Sequence[IndexModel],
    retired: Iterable[str] = (),
) -> None:
    existing = {index["name"]: index async for index in await collection.list_indexes()}
    wanted = [index.document for index in indexes]
    stale = [
        spec["name"]
        for spec in wanted
        if spec["name"] in existing and not same_definition(existing[spec["name"]], spec)
    ]
    for name in [*stale, *(name for name in retired if name in existing)]:
        try:
            await collection.drop_index(name)
        except OperationFailure as exc:
            # The services start together, and another one dropped it first.
            if exc.code != INDEX_NOT_FOUND:
                raise
    await collection.create_indexes(list(indexes))
