"""The write concerns of MongoTaskStore (deploy/OPERATIONS.md, "durability and write concern").

Two kinds of write:
- those a sweep or a later step repairs (REPAIRABLE): acknowledged once applied;
- those nothing could repair, a task accepted and a result that ended its task: acknowledged
  once durable, by the URL's write concern, else the server's default `w: "majority"`.

On a replica set with one voting member, a majority is that member, and `w: "majority"` promises
what `{w: 1, j: true}` does: the write is in that member's journal. mongod reaches the second by
a shorter path (the journal flush alone, without the majority commit point that follows it), so
the store asks for it there: paired on this project's 2-core box, 13-17% less CPU per task
across the five processes (bench/README.md, session 10)."""

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pymongo import AsyncMongoClient, WriteConcern
from pymongo.errors import OperationFailure

# The routing stamp, a claim, a drone's `processing` and a result's copy in processingResults:
# acknowledged once applied, without waiting for the journal. The journal is one log, so the
# next journaled write of any caller makes every earlier one durable too, and a crash of mongod
# can lose only such writes made after the last journaled one. Each of those is redone by a
# sweep from what the journaled writes left, or overwritten by the next step.
REPAIRABLE = WriteConcern(w=1, j=False)

# What `w: "majority"` means on a set whose only voting member is the one written to.
LONE_VOTER = WriteConcern(w=1, j=True)

URL_WRITE_CONCERN_OPTIONS = frozenset({"w", "journal", "wtimeoutms"})


def url_sets_write_concern(url: str) -> bool:
    options = parse_qsl(urlsplit(url).query)
    return any(name.lower() in URL_WRITE_CONCERN_OPTIONS for name, _ in options)


def one_voting_member(config: dict[str, Any]) -> bool:
    """Whether a replica set configuration (replSetGetConfig's `config`) has one voting member,
    which bears data: only then is that member alone a majority. Hidden and delayed members
    count as they vote (`hello` would not list them, so the configuration is read instead)."""
    voters = [member for member in config.get("members", []) if member.get("votes", 1) > 0]
    return len(voters) == 1 and not voters[0].get("arbiterOnly", False)


async def durable_write_concern(client: AsyncMongoClient[Any], url: str) -> WriteConcern | None:
    """The concern for the writes nothing could repair, or None to keep the URL's (the server's
    default). LONE_VOTER when the URL sets none and the set has one voting member. Anything else
    keeps the default: a standalone or mongos (no replica set configuration to read), a user
    without the `replSetGetConfig` privilege (role clusterMonitor), a set of several voters.
    Asked once, when the store opens: a set given more voters later is written to with
    LONE_VOTER until each service restarts (deploy/OPERATIONS.md says so)."""
    if url_sets_write_concern(url):
        return None
    try:
        reply = await client.admin.command("replSetGetConfig")
    except OperationFailure:  # not a replica set, or not allowed to read its configuration
        return None
    return LONE_VOTER if one_voting_member(reply.get("config", {})) else None
