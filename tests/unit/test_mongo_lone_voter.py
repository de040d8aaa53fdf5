"""When MongoTaskStore may write `{w: 1, j: true}` for `w: "majority"`: only when one member of
the replica set votes, and it bears data (shared/store/mongo/write_concern.py)."""

import pytest

from shared.store.mongo.write_concern import one_voting_member, url_sets_write_concern


def member(number: int, **fields: object) -> dict[str, object]:
    return {"_id": number, "host": f"mongo{number}:27017", **fields}


@pytest.mark.parametrize(
    ("members", "alone"),
    [
        ([member(0)], True),
        ([member(0), member(1, votes=0, priority=0), member(2, votes=0, priority=0)], True),
        ([member(0), member(1), member(2)], False),
        # Neither shows in `hello`, and each counts toward a majority.
        ([member(0), member(1, hidden=True, priority=0)], False),
        ([member(0), member(1, priority=0, secondaryDelaySecs=3600, hidden=True)], False),
        # An arbiter votes, so two members do: the store keeps `majority` and leaves it to
        # MongoDB to work out what a majority of a set with an arbiter waits for.
        ([member(0), member(1, arbiterOnly=True)], False),
        ([member(0, arbiterOnly=True)], False),
        ([], False),
    ],
    ids=[
        "one member",
        "one voter and two non-voting",
        "three voters",
        "a hidden voter",
        "a delayed voter",
        "an arbiter beside",
        "only an arbiter",
        "no members",
    ],
)
def test_a_majority_is_one_member_only_when_one_data_bearing_member_votes(
    members: list[dict[str, object]], alone: bool
) -> None:
    assert one_voting_member({"_id": "rs0", "members": members}) is alone


@pytest.mark.parametrize(
    ("query", "sets"),
    [
        ("", False),
        ("replicaSet=rs0&authSource=admin", False),
        ("w=majority", True),
        ("W=1", True),
        ("journal=true", True),
        ("replicaSet=rs0&wTimeoutMS=500", True),
    ],
)
def test_a_url_that_sets_any_write_concern_option_keeps_it(query: str, sets: bool) -> None:
    assert url_sets_write_concern(f"mongodb://db.example:27017/droneflow?{query}") is sets
