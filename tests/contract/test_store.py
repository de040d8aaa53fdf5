"""The TaskStore contract, written once against the port and run on every adapter (the `store`
fixture, tests/contract/conftest.py). What only one adapter can show lives beside its unit
tests: tests/unit/test_sqlite_store.py."""

import asyncio
import base64

import pytest

from shared.clock import iso_after, now_iso
from shared.errors import StatusNotReportable, TaskAlreadyFinished, TaskNotFound, TaskNotYours
from shared.models import ResultRecord, TaskRecord
from shared.store import ResultOutcome, TaskStore, TokenRecord
from tests.builders import APP, DRONE, claimed, create, new_task, result_for


async def all_pages(store: TaskStore, limit: int, **filters: str | None) -> list[TaskRecord]:
    tasks: list[TaskRecord] = []
    cursor = None
    while True:
        page = await store.list_tasks(
            app_id=filters.get("app_id"),
            status=filters.get("status"),
            updated_since=filters.get("updated_since"),
            limit=limit,
            cursor=cursor,
        )
        assert len(page.tasks) <= limit
        tasks.extend(page.tasks)
        if page.next_cursor is None:
            return tasks
        assert len(page.tasks) == limit
        cursor = page.next_cursor


async def tick() -> None:
    """Let the millisecond clock move on, so timestamps before and after differ."""
    await asyncio.sleep(0.005)


# --- creating and reading -----------------------------------------------------------------


async def test_create_task_stores_a_pending_queued_task(store: TaskStore) -> None:
    new = new_task(priority=4, timeout_s=30.0, ttl_s=60.0, max_attempts=5)

    outcome = await store.create_task(new)

    assert outcome.created
    task = outcome.task
    assert (task.task_id, task.app_id, task.drone_id) == (new.task_id, APP, DRONE)
    assert task.input_data == new.input_data
    assert (task.status, task.delivery, task.attempts) == ("pending", "queued", 0)
    assert (task.priority, task.max_attempts, task.timeout_s, task.ttl_s) == (4, 5, 30.0, 60.0)
    assert task.created_at == task.updated_at
    assert len(task.created_at) == 24
    assert task.created_at.endswith("Z")
    assert task.dispatched_at is None
    assert task.delivered_at is None
    assert task.finished_at is None
    assert await store.get_task(new.task_id) == task


async def test_records_read_back_equal_validated_records(store: TaskStore) -> None:
    task = await claimed(store, timeout_s=10.0)
    await store.save_result(result_for(task.task_id))

    stored_task = await store.get_task(task.task_id)
    stored_result = await store.get_result(task.task_id)

    assert stored_task is not None
    assert stored_result is not None
    assert TaskRecord.model_validate(stored_task.model_dump()) == stored_task
    assert ResultRecord.model_validate(stored_result.model_dump()) == stored_result
    assert isinstance(stored_task.timeout_s, float)


async def test_get_task_and_get_result_of_unknown_task_return_none(store: TaskStore) -> None:
    assert await store.get_task("task_unknown") is None
    assert await store.get_result("task_unknown") is None


async def test_create_task_with_known_idempotency_key_returns_that_task(store: TaskStore) -> None:
    first = await store.create_task(new_task(idempotency_key="order-7"))

    again = await store.create_task(new_task(idempotency_key="order-7"))

    assert first.created
    assert not again.created
    assert again.task == first.task
    assert [task.task_id for task in await all_pages(store, 10)] == [first.task.task_id]


async def test_create_task_idempotency_key_is_per_app(store: TaskStore) -> None:
    mine = await store.create_task(new_task(idempotency_key="k"))
    theirs = await store.create_task(new_task(app_id="App002", idempotency_key="k"))
    unkeyed = [await store.create_task(new_task()) for _ in range(2)]

    assert theirs.created
    assert theirs.task.task_id != mine.task.task_id
    assert all(outcome.created for outcome in unkeyed)
    assert len(await all_pages(store, 10)) == 4


async def test_create_task_retried_with_same_task_id_creates_it_once(store: TaskStore) -> None:
    new = new_task()

    first, again = await store.create_task(new), await store.create_task(new)

    assert (first.created, again.created) == (True, False)
    assert again.task == first.task


async def test_concurrent_creates_with_taken_keys_create_each_task_once(store: TaskStore) -> None:
    # Given an existing keyed task, then creates sent at once (an adapter may join them):
    # new tasks, the same key again (twice), and one task id retried
    first = await store.create_task(new_task(idempotency_key="order-1"))
    retried = new_task()
    fresh = [new_task() for _ in range(4)]
    asked = [
        fresh[0],
        new_task(idempotency_key="order-1"),
        fresh[1],
        retried,
        new_task(idempotency_key="order-1"),
        retried,
        fresh[2],
        fresh[3],
    ]

    outcomes = await asyncio.gather(*(store.create_task(new) for new in asked))

    # Then each answer belongs to its own call, and nothing was created twice
    assert [outcome.created for outcome in outcomes] == [
        True, False, True, True, False, False, True, True
    ]  # fmt: skip
    assert outcomes[1].task == outcomes[4].task == first.task
    assert outcomes[5].task == outcomes[3].task
    assert [outcome.task.task_id for outcome in outcomes[:1] + outcomes[2:4] + outcomes[6:]] == [
        new.task_id for new in (fresh[0], fresh[1], retried, fresh[2], fresh[3])
    ]
    assert len(await all_pages(store, 20)) == 6


async def test_pending_for_drone_orders_by_priority_then_age(store: TaskStore) -> None:
    tasks = []
    for priority in (2, 5, 1, 5, 3):
        tasks.append(await create(store, priority=priority))
        await tick()
    await create(store, drone_id="Drone002", priority=5)
    started = await claimed(store, priority=5)
    await store.apply_status(started.task_id, DRONE, "processing")
    cancelled = await create(store, priority=5)
    await store.cancel(cancelled.task_id)

    pending = await store.pending_for_drone(DRONE, 10)
    first_two = await store.pending_for_drone(DRONE, 2)

    expected = [tasks[1], tasks[3], tasks[4], tasks[0], tasks[2]]
    assert [task.task_id for task in pending] == [task.task_id for task in expected]
    assert [task.task_id for task in first_two] == [tasks[1].task_id, tasks[3].task_id]
    assert await store.pending_for_drone("Drone404", 10) == []


async def test_pending_for_drone_breaks_priority_ties_by_creation_order(store: TaskStore) -> None:
    # Created back to back, several share a millisecond: the insertion order still decides.
    created = [await create(store) for _ in range(12)]

    pending = await store.pending_for_drone(DRONE, 20)

    assert [task.task_id for task in pending] == [task.task_id for task in created]


async def test_count_pending_counts_the_apps_pending_tasks_up_to_a_bound(
    store: TaskStore,
) -> None:
    waiting = [await create(store, drone_id=f"Drone00{i}") for i in range(4)]
    await create(store, app_id="App002")
    started = await claimed(store)
    await store.apply_status(started.task_id, DRONE, "processing")
    await store.cancel((await create(store)).task_id)
    await store.save_result(result_for((await create(store)).task_id))

    assert await store.count_pending(APP, 100) == len(waiting)
    assert await store.count_pending(APP, 3) == 3
    assert await store.count_pending("App002", 100) == 1
    assert await store.count_pending("App404", 100) == 0
    await store.cancel(waiting[0].task_id)
    assert await store.count_pending(APP, 100) == len(waiting) - 1


async def test_list_tasks_pages_through_every_task_once_in_order(store: TaskStore) -> None:
    created = []
    for index in range(23):
        created.append(await create(store, app_id="App002" if index % 5 == 0 else APP))
        if index % 4 == 0:
            await tick()

    listed = await all_pages(store, 5)

    assert len(listed) == 23
    assert {task.task_id for task in listed} == {task.task_id for task in created}
    keys = [(task.updated_at, task.task_id) for task in listed]
    assert keys == sorted(keys)


async def test_list_tasks_filters_by_app_status_and_updated_since(store: TaskStore) -> None:
    mine = [await create(store) for _ in range(7)]
    theirs = [await create(store, app_id="App002") for _ in range(3)]
    await tick()
    since = now_iso()
    await tick()
    for task in mine[:4]:
        await store.cancel(task.task_id)
    await store.cancel(theirs[0].task_id)

    by_app = await all_pages(store, 2, app_id=APP)
    by_status = await all_pages(store, 2, status="cancelled")
    by_both = await all_pages(store, 3, app_id=APP, status="pending")
    recent = await all_pages(store, 2, updated_since=since)
    recent_theirs = await all_pages(store, 2, app_id="App002", updated_since=since)

    assert {task.task_id for task in by_app} == {task.task_id for task in mine}
    assert {task.task_id for task in by_status} == {task.task_id for task in [*mine[:4], theirs[0]]}
    assert {task.task_id for task in by_both} == {task.task_id for task in mine[4:]}
    assert {task.task_id for task in recent} == {task.task_id for task in by_status}
    assert [task.task_id for task in recent_theirs] == [theirs[0].task_id]


async def test_list_tasks_with_no_match_returns_an_empty_last_page(store: TaskStore) -> None:
    await create(store)

    page = await store.list_tasks(
        app_id="App404", status=None, updated_since=None, limit=5, cursor=None
    )

    assert page.tasks == []
    assert page.next_cursor is None


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "",
        base64.urlsafe_b64encode(b"v9|2024-01-01T00:00:00.000Z|task_1").decode(),
        base64.urlsafe_b64encode(b"v1|yesterday|task_1").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
async def test_list_tasks_rejects_a_cursor_it_did_not_issue(store: TaskStore, cursor: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        await store.list_tasks(app_id=None, status=None, updated_since=None, limit=5, cursor=cursor)


# --- dispatch and delivery ----------------------------------------------------------------


async def test_mark_dispatched_stamps_a_queued_task(store: TaskStore) -> None:
    task = await create(store)

    dispatched = await store.mark_dispatched(task.task_id)

    assert dispatched is not None
    assert dispatched.dispatched_at is not None
    assert dispatched.status == "pending"
    assert await store.get_task(task.task_id) == dispatched


async def test_mark_dispatched_drops_unknown_delivered_and_terminal_tasks(
    store: TaskStore,
) -> None:
    delivered = await claimed(store)
    cancelled = await create(store)
    await store.cancel(cancelled.task_id)

    assert await store.mark_dispatched("task_unknown") is None
    assert await store.mark_dispatched(delivered.task_id) is None
    assert await store.mark_dispatched(cancelled.task_id) is None


async def test_stamp_dispatched_stamps_queued_tasks_and_leaves_the_rest(store: TaskStore) -> None:
    # Given queued tasks beside a delivered and a cancelled one
    queued = [await create(store) for _ in range(3)]
    delivered = await claimed(store)
    cancelled = await create(store)
    await store.cancel(cancelled.task_id)
    before = {t.task_id: await store.get_task(t.task_id) for t in (delivered, cancelled)}

    # When all of them, one twice, and an unknown id are stamped in one call
    ids = [task.task_id for task in queued]
    await store.stamp_dispatched(
        [*ids, ids[0], "task_unknown", delivered.task_id, cancelled.task_id]
    )
    await store.stamp_dispatched([])

    # Then the queued ones carry a routing stamp, as mark_dispatched leaves them, and are no
    # longer undispatched; the others are as they were
    for task_id in ids:
        task = await store.get_task(task_id)
        assert task is not None and task.dispatched_at is not None
        assert (task.status, task.delivery, task.updated_at) == (
            "pending",
            "queued",
            task.created_at,
        )
    assert await store.undispatched(iso_after(60), 10) == []
    for task_id, was in before.items():
        assert await store.get_task(task_id) == was


async def test_concurrent_mark_dispatched_answers_each_call_for_its_own_task(
    store: TaskStore,
) -> None:
    # Given queued tasks, one of them twice, beside unknown, delivered and cancelled ones
    queued = [await create(store) for _ in range(8)]
    delivered = await claimed(store)
    cancelled = await create(store)
    await store.cancel(cancelled.task_id)
    asked = [
        *(task.task_id for task in queued),
        queued[0].task_id,
        "task_unknown",
        delivered.task_id,
        cancelled.task_id,
    ]

    # When they are all marked at once (an adapter may join them into one write)
    answers = await asyncio.gather(*(store.mark_dispatched(task_id) for task_id in asked))

    # Then every queued task comes back stamped, as stored, to each call that asked for it
    for task_id, answer in zip(asked[:9], answers[:9], strict=True):
        assert answer is not None
        assert answer.task_id == task_id
        assert answer.dispatched_at is not None
        assert answer.delivery == "queued"
        assert await store.get_task(task_id) == answer
    assert answers[9:] == [None, None, None]
    assert (await store.get_task(delivered.task_id)) == delivered


async def test_concurrent_results_of_many_tasks_end_each_task_once(store: TaskStore) -> None:
    # Given ten delivered tasks and two results for each, sent at once
    tasks = [await claimed(store) for _ in range(10)]
    results = [
        result_for(task.task_id, success=copy == 0, error_message=None if copy == 0 else "x")
        for copy in range(2)
        for task in tasks
    ]

    outcomes = await asyncio.gather(
        *(store.save_result(result) for result in results), return_exceptions=True
    )

    # Then each task has exactly one winner, stored, and the other caller hears that result
    for task in tasks:
        mine = [
            (result, outcome)
            for result, outcome in zip(results, outcomes, strict=True)
            if result.task_id == task.task_id
        ]
        winners = [outcome for _, outcome in mine if isinstance(outcome, ResultOutcome)]
        losers = [outcome for _, outcome in mine if isinstance(outcome, TaskAlreadyFinished)]
        assert len(winners) == 1
        assert len(losers) == 1
        won = winners[0]
        assert won.task.status == ("completed" if won.result.success else "failed")
        assert won.task == await store.get_task(task.task_id)
        assert await store.get_result(task.task_id) == won.result
        assert losers[0].result == won.result


async def test_undispatched_lists_queued_tasks_never_routed(store: TaskStore) -> None:
    routed, lost, other = [await create(store) for _ in range(3)]
    delivered = await claimed(store)
    ended = await create(store)
    await store.cancel(ended.task_id)
    await store.mark_dispatched(routed.task_id)
    later = iso_after(1)

    waiting = await store.undispatched(later, 10)

    assert {task.task_id for task in waiting} == {lost.task_id, other.task_id}
    assert delivered.task_id not in {task.task_id for task in waiting}
    assert len(await store.undispatched(later, 1)) == 1
    assert await store.undispatched(lost.created_at, 10) == []


async def test_routed_before_lists_tasks_still_waiting_in_a_drone_queue(store: TaskStore) -> None:
    first, second, never = [await create(store) for _ in range(3)]
    delivered, ended = await create(store), await create(store)
    for task in (first, second, delivered, ended):
        await store.mark_dispatched(task.task_id)
    await store.claim(delivered.task_id, DRONE)
    await store.cancel(ended.task_id)

    waiting = await store.routed_before(iso_after(1), 10)

    assert [task.task_id for task in waiting] == [first.task_id, second.task_id]
    assert never.task_id not in {task.task_id for task in waiting}
    assert len(await store.routed_before(iso_after(1), 1)) == 1
    assert await store.routed_before(first.created_at, 10) == []


async def test_reset_dispatch_makes_queued_tasks_routable_again(store: TaskStore) -> None:
    routed = [await create(store) for _ in range(3)]
    for task in routed:
        await store.mark_dispatched(task.task_id)
    delivered = await create(store)
    await store.mark_dispatched(delivered.task_id)
    await store.claim(delivered.task_id, DRONE)
    ended = await create(store)
    await store.mark_dispatched(ended.task_id)
    await store.cancel(ended.task_id)

    count = await store.reset_dispatch()

    assert count == 3
    waiting = await store.undispatched(iso_after(1), 10)
    assert {task.task_id for task in waiting} == {task.task_id for task in routed}
    assert await store.reset_dispatch() == 0


async def test_claim_delivers_a_queued_task_to_its_drone(store: TaskStore) -> None:
    task = await create(store, timeout_s=30.0)
    await store.mark_dispatched(task.task_id)

    delivered = await store.claim(task.task_id, DRONE)

    assert delivered is not None
    assert (delivered.delivery, delivered.attempts, delivered.status) == (
        "delivered",
        1,
        "pending",
    )
    assert delivered.delivered_at is not None
    assert delivered.delivered_at >= task.created_at
    assert await store.get_task(task.task_id) == delivered


async def test_claim_refuses_wrong_drone_unknown_delivered_and_terminal_tasks(
    store: TaskStore,
) -> None:
    task = await create(store)
    ended = await create(store)
    await store.cancel(ended.task_id)

    assert await store.claim(task.task_id, "Drone002") is None
    assert await store.claim("task_unknown", DRONE) is None
    assert await store.claim(task.task_id, DRONE) is not None
    assert await store.claim(task.task_id, DRONE) is None
    assert await store.claim(ended.task_id, DRONE) is None
    stored = await store.get_task(task.task_id)
    assert stored is not None
    assert stored.attempts == 1


async def test_claim_refuses_a_pending_task_past_its_ttl(store: TaskStore) -> None:
    stale = await create(store, ttl_s=0.01)
    fresh = await create(store, ttl_s=60.0)
    await asyncio.sleep(0.05)

    assert await store.claim(stale.task_id, DRONE) is None
    assert await store.claim(fresh.task_id, DRONE) is not None


async def test_concurrent_claims_of_one_task_deliver_it_once(store: TaskStore) -> None:
    task = await create(store)

    claims = await asyncio.gather(*(store.claim(task.task_id, DRONE) for _ in range(25)))

    winners = [claim for claim in claims if claim is not None]
    assert len(winners) == 1
    assert winners[0].attempts == 1


async def test_concurrent_claims_of_many_tasks_deliver_each_once_to_its_drone(
    store: TaskStore,
) -> None:
    # Given queued tasks of two drones, each claimed three times at once, once by a stranger
    mine = [await create(store, timeout_s=30.0) for _ in range(5)]
    theirs = [await create(store, drone_id="Drone002") for _ in range(5)]
    asked = [(task.task_id, task.drone_id) for _ in range(2) for task in [*mine, *theirs]] + [
        (task.task_id, "Drone003") for task in mine
    ]

    claims = await asyncio.gather(*(store.claim(task_id, drone) for task_id, drone in asked))

    # Then each task is delivered once, to its own drone, and stored as the winner was told
    for task in [*mine, *theirs]:
        won = [
            claim
            for (task_id, _), claim in zip(asked, claims, strict=True)
            if task_id == task.task_id and claim is not None
        ]
        assert len(won) == 1
        assert (won[0].drone_id, won[0].delivery, won[0].attempts) == (
            task.drone_id,
            "delivered",
            1,
        )
        assert await store.get_task(task.task_id) == won[0]
    assert claims[20:] == [None] * 5
    assert all(claim is not None and claim.timeout_s == 30.0 for claim in claims[:5])


async def test_a_strangers_claim_made_with_the_drones_own_does_not_stop_it(
    store: TaskStore,
) -> None:
    # Given a task asked for by a stranger, then by its drone, at once (one batch, where the
    # store joins claims)
    task = await create(store)

    stranger, own = await asyncio.gather(
        store.claim(task.task_id, "Drone003"), store.claim(task.task_id, DRONE)
    )

    # Then its drone has it
    assert stranger is None
    assert own is not None and (own.drone_id, own.attempts) == (DRONE, 1)


async def test_release_puts_a_delivered_task_back_in_the_queue(store: TaskStore) -> None:
    task = await claimed(store, timeout_s=30.0)
    await store.apply_status(task.task_id, DRONE, "processing")

    released = await store.release(task.task_id, DRONE, reason="timeout")

    assert released is not None
    assert (released.delivery, released.status) == ("queued", "processing")
    assert released.dispatched_at is None
    assert released.error_code is None
    again = await store.claim(task.task_id, DRONE)
    assert again is not None
    assert again.attempts == 2


async def test_release_fails_the_task_after_max_attempts(store: TaskStore) -> None:
    task = await claimed(store, max_attempts=2)
    await store.release(task.task_id, DRONE)
    await store.claim(task.task_id, DRONE)

    released = await store.release(task.task_id, DRONE, reason="timeout")

    assert released is not None
    assert (released.status, released.error_code) == ("failed", "max_attempts")
    assert released.error_message
    assert released.finished_at is not None
    assert await store.claim(task.task_id, DRONE) is None


async def test_release_changes_nothing_unless_delivered_to_that_drone(store: TaskStore) -> None:
    queued = await create(store)
    delivered = await claimed(store)
    ended = await claimed(store)
    await store.save_result(result_for(ended.task_id))

    assert await store.release(queued.task_id, DRONE) is None
    assert await store.release(delivered.task_id, "Drone002") is None
    assert await store.release(ended.task_id, DRONE) is None
    assert await store.release("task_unknown", DRONE) is None
    assert await store.get_task(delivered.task_id) == delivered


async def test_release_is_fenced_to_one_delivery(store: TaskStore) -> None:
    first = await claimed(store, max_attempts=5)
    assert await store.release(first.task_id, DRONE, attempt=first.attempts) is not None
    second = await store.claim(first.task_id, DRONE)
    assert second is not None
    assert second.attempts == first.attempts + 1

    # A sweep that read the first delivery must not release the second one
    assert await store.release(first.task_id, DRONE, attempt=first.attempts) is None
    still = await store.get_task(first.task_id)
    assert still is not None
    assert still.delivery == "delivered"
    released = await store.release(first.task_id, DRONE, attempt=second.attempts)
    assert released is not None
    assert released.delivery == "queued"


async def test_held_by_lists_the_live_tasks_delivered_to_the_drone(store: TaskStore) -> None:
    held = [await claimed(store) for _ in range(3)]
    queued = await create(store)
    elsewhere = await claimed(store, drone_id="Drone002")
    ended = await claimed(store)
    await store.save_result(result_for(ended.task_id))

    listed = await store.held_by(DRONE)

    assert listed == held  # oldest delivery first, each as stored
    assert await store.get_task(queued.task_id) == queued
    assert await store.held_by("Drone002") == [elsewhere]


async def test_held_by_changes_nothing_so_a_resumed_delivery_keeps_its_attempt(
    store: TaskStore,
) -> None:
    task = await claimed(store, timeout_s=30.0, max_attempts=1)

    for _ in range(5):  # as many reconnects as you like
        assert await store.held_by(DRONE) == [task]

    # The delivery is still the one claimed: its timeout releases it, fenced to that attempt
    assert await store.claim(task.task_id, DRONE) is None
    released = await store.release(task.task_id, DRONE, reason="timeout", attempt=task.attempts)
    assert released is not None
    assert (released.status, released.error_code, released.attempts) == (
        "failed",
        "max_attempts",
        1,
    )
    assert await store.held_by(DRONE) == []


async def test_overdue_lists_delivered_tasks_past_their_timeout(store: TaskStore) -> None:
    late = await claimed(store, timeout_s=30.0)
    later = await claimed(store, timeout_s=45.0)
    await claimed(store)  # no timeout: never overdue
    queued = await create(store, timeout_s=30.0)
    ended = await claimed(store, timeout_s=30.0)
    await store.cancel(ended.task_id)

    assert await store.overdue(now_iso(), 10) == []
    overdue = await store.overdue(iso_after(40), 10)
    assert [task.task_id for task in overdue] == [late.task_id]
    overdue = await store.overdue(iso_after(3600), 10)
    assert [task.task_id for task in overdue] == [late.task_id, later.task_id]
    assert len(await store.overdue(iso_after(3600), 1)) == 1
    assert queued.task_id not in {task.task_id for task in overdue}


async def test_overdue_forgets_a_released_task(store: TaskStore) -> None:
    task = await claimed(store, timeout_s=30.0)

    await store.release(task.task_id, DRONE, reason="timeout")

    assert await store.overdue(iso_after(3600), 10) == []


async def test_expire_fails_queued_pending_tasks_past_their_ttl(store: TaskStore) -> None:
    stale = [await create(store, ttl_s=30.0) for _ in range(3)]
    await create(store)  # no ttl
    delivered = await claimed(store, ttl_s=30.0)
    started = await claimed(store, ttl_s=30.0)
    await store.apply_status(started.task_id, DRONE, "processing")
    await store.release(started.task_id, DRONE)

    assert await store.expire(now_iso(), 10) == []
    first = await store.expire(iso_after(60), 2)
    rest = await store.expire(iso_after(60), 10)

    expired = [*first, *rest]
    assert len(first) == 2
    assert {task.task_id for task in expired} == {task.task_id for task in stale}
    assert all(task.status == "failed" and task.error_code == "expired" for task in expired)
    assert all(task.finished_at is not None for task in expired)
    assert await store.get_task(delivered.task_id) == delivered
    kept = await store.get_task(started.task_id)
    assert kept is not None
    assert kept.status == "processing"
    assert await store.expire(iso_after(60), 10) == []


# --- drone reports --------------------------------------------------------------------------


async def test_apply_status_processing_starts_the_task(store: TaskStore) -> None:
    task = await claimed(store)

    outcome = await store.apply_status(task.task_id, DRONE, "processing")

    assert outcome.task.status == "processing"
    assert outcome.task.started_at is not None
    assert await store.get_task(task.task_id) == outcome.task


async def test_apply_status_processing_again_is_a_progress_report(store: TaskStore) -> None:
    task = await claimed(store)
    first = await store.apply_status(task.task_id, DRONE, "processing")
    await tick()

    again = await store.apply_status(task.task_id, DRONE, "processing")

    assert again.task.started_at == first.task.started_at
    assert again.task.updated_at > first.task.updated_at


async def test_apply_status_refusals_raise_and_change_nothing(store: TaskStore) -> None:
    task = await claimed(store)
    ended = await claimed(store)
    await store.save_result(result_for(ended.task_id))

    with pytest.raises(TaskAlreadyFinished) as ignored:
        await store.apply_status(ended.task_id, DRONE, "processing")
    with pytest.raises(TaskNotYours) as not_yours:
        await store.apply_status(task.task_id, "Drone002", "processing")
    with pytest.raises(TaskNotFound) as not_found:
        await store.apply_status("task_unknown", DRONE, "processing")

    assert ignored.value.task is not None
    assert ignored.value.task.status == "completed"
    assert not_yours.value.task == task
    assert not_found.value.task is None
    for status in ("completed", "failed", "pending", "cancelled", "bogus"):
        with pytest.raises(StatusNotReportable):
            await store.apply_status(task.task_id, DRONE, status)
    assert await store.get_task(task.task_id) == task


async def test_save_result_completes_the_task(store: TaskStore) -> None:
    task = await claimed(store, timeout_s=30.0)
    result = result_for(task.task_id)

    outcome = await store.save_result(result)

    assert outcome.result == result
    assert (outcome.task.status, outcome.task.error_code) == ("completed", None)
    assert outcome.task.finished_at is not None
    assert await store.get_task(task.task_id) == outcome.task
    assert await store.get_result(task.task_id) == result
    assert await store.overdue(iso_after(3600), 10) == []


async def test_save_result_of_a_failure_fails_the_task(store: TaskStore) -> None:
    task = await claimed(store)
    result = result_for(task.task_id, success=False, error_message="Invalid image format")

    outcome = await store.save_result(result)

    assert outcome.result == result
    assert outcome.task.status == "failed"
    assert outcome.task.error_code == "drone_error"
    assert outcome.task.error_message == "Invalid image format"
    assert outcome.task.finished_at is not None
    assert await store.get_result(task.task_id) == result


async def test_save_result_straight_from_pending_is_allowed(store: TaskStore) -> None:
    task = await create(store)

    outcome = await store.save_result(result_for(task.task_id))

    assert outcome.task.status == "completed"


async def test_save_result_keeps_only_the_first_result(store: TaskStore) -> None:
    task = await claimed(store)
    first = result_for(task.task_id)
    await store.save_result(first)

    with pytest.raises(TaskAlreadyFinished) as again:
        await store.save_result(result_for(task.task_id, success=False, error_message="x"))

    assert again.value.result == first
    assert again.value.task is not None
    assert again.value.task.status == "completed"
    assert await store.get_result(task.task_id) == first
    assert await store.results_for_drone(DRONE, 10) == [first]


async def test_save_result_after_cancel_is_not_stored(store: TaskStore) -> None:
    task = await claimed(store)
    await store.cancel(task.task_id)

    with pytest.raises(TaskAlreadyFinished) as refused:
        await store.save_result(result_for(task.task_id))

    assert refused.value.result is None
    assert refused.value.task is not None
    assert refused.value.task.status == "cancelled"
    assert await store.get_result(task.task_id) is None


async def test_save_result_of_an_unknown_task_raises_task_not_found(store: TaskStore) -> None:
    with pytest.raises(TaskNotFound):
        await store.save_result(result_for("task_unknown"))


async def test_concurrent_results_of_one_task_store_exactly_one(store: TaskStore) -> None:
    task = await claimed(store)
    results = [result_for(task.task_id, success=index % 2 == 0) for index in range(12)]

    outcomes = await asyncio.gather(
        *(store.save_result(result) for result in results), return_exceptions=True
    )

    winners = [outcome for outcome in outcomes if isinstance(outcome, ResultOutcome)]
    losers = [outcome for outcome in outcomes if isinstance(outcome, TaskAlreadyFinished)]
    assert len(winners) == 1
    assert len(losers) == len(results) - 1
    winner = winners[0].result
    assert all(loser.result == winner for loser in losers)
    assert await store.get_result(task.task_id) == winner
    assert await store.results_for_drone(DRONE, 20) == [winner]


async def test_failing_calls_do_not_fail_calls_running_beside_them(store: TaskStore) -> None:
    tasks = [await create(store) for _ in range(10)]

    outcomes = await asyncio.gather(
        *(store.save_result(result_for(f"task_unknown_{index}")) for index in range(10)),
        *(store.save_result(result_for(task.task_id)) for task in tasks),
        return_exceptions=True,
    )

    assert all(isinstance(outcome, TaskNotFound) for outcome in outcomes[:10])
    assert all(isinstance(outcome, ResultOutcome) for outcome in outcomes[10:])


async def test_cancel_ends_a_pending_task(store: TaskStore) -> None:
    task = await create(store)

    outcome = await store.cancel(task.task_id)

    assert not outcome.was_delivered
    assert (outcome.task.status, outcome.task.error_code) == ("cancelled", "cancelled")
    assert outcome.task.finished_at is not None
    assert await store.pending_for_drone(DRONE, 10) == []


async def test_cancel_of_a_delivered_task_says_a_drone_held_it(store: TaskStore) -> None:
    task = await claimed(store, timeout_s=30.0)

    outcome = await store.cancel(task.task_id)

    assert outcome.was_delivered
    assert outcome.task.status == "cancelled"
    assert await store.overdue(iso_after(3600), 10) == []
    assert await store.held_by(DRONE) == []


async def test_cancel_of_a_terminal_or_unknown_task(store: TaskStore) -> None:
    task = await claimed(store)
    await store.save_result(result_for(task.task_id))

    with pytest.raises(TaskAlreadyFinished) as refused:
        await store.cancel(task.task_id)

    assert refused.value.task is not None
    assert refused.value.task.status == "completed"
    with pytest.raises(TaskNotFound):
        await store.cancel("task_unknown")


async def test_a_finished_task_never_moves_backwards(store: TaskStore) -> None:
    task = await claimed(store, timeout_s=1.0, ttl_s=1.0)
    await store.apply_status(task.task_id, DRONE, "processing")
    done = (await store.save_result(result_for(task.task_id))).task

    assert await store.mark_dispatched(task.task_id) is None
    assert await store.claim(task.task_id, DRONE) is None
    assert await store.release(task.task_id, DRONE) is None
    assert await store.held_by(DRONE) == []
    with pytest.raises(TaskAlreadyFinished):
        await store.apply_status(task.task_id, DRONE, "processing")
    with pytest.raises(StatusNotReportable):
        await store.apply_status(task.task_id, DRONE, "pending")
    with pytest.raises(TaskAlreadyFinished):
        await store.save_result(result_for(task.task_id))
    with pytest.raises(TaskAlreadyFinished):
        await store.cancel(task.task_id)
    assert await store.expire(iso_after(3600), 10) == []
    assert await store.overdue(iso_after(3600), 10) == []
    assert await store.reset_dispatch() == 0
    assert await store.get_task(task.task_id) == done


# --- notification bookkeeping ----------------------------------------------------------------


async def test_unnotified_lists_finished_tasks_oldest_first(store: TaskStore) -> None:
    completed = await claimed(store)
    result = result_for(completed.task_id)
    await store.save_result(result)
    await tick()
    cancelled = await create(store)
    await store.cancel(cancelled.task_id)
    await tick()
    running = await claimed(store)

    pending = await store.unnotified(10)

    assert [(task.task_id, stored) for task, stored in pending] == [
        (completed.task_id, result),
        (cancelled.task_id, None),
    ]
    assert [task.task_id for task, _ in await store.unnotified(1)] == [completed.task_id]
    assert running.task_id not in {task.task_id for task, _ in pending}


async def test_mark_notified_removes_tasks_from_unnotified(store: TaskStore) -> None:
    ended = [await create(store) for _ in range(3)]
    for task in ended:
        await store.cancel(task.task_id)
    running = await create(store)

    await store.mark_notified([ended[0].task_id, ended[1].task_id, running.task_id])
    await store.mark_notified([])

    left = await store.unnotified(10)
    assert [task.task_id for task, _ in left] == [ended[2].task_id]
    notified = await store.get_task(ended[0].task_id)
    assert notified is not None
    assert notified.notified_at is not None
    # Marking a running task changes nothing: once it ends, its app must still hear of it.
    await tick()
    await store.cancel(running.task_id)
    left = await store.unnotified(10)
    assert [task.task_id for task, _ in left] == [ended[2].task_id, running.task_id]


async def test_results_for_drone_lists_newest_first(store: TaskStore) -> None:
    results = []
    for second in range(5):
        task = await claimed(store)
        result = result_for(task.task_id, timestamp=f"2024-01-01T12:00:0{second}.000Z")
        await store.save_result(result)
        results.append(result)
    other = await claimed(store, drone_id="Drone002")
    await store.save_result(result_for(other.task_id, drone_id="Drone002"))

    newest = await store.results_for_drone(DRONE, 3)

    assert newest == results[::-1][:3]
    assert len(await store.results_for_drone(DRONE, 50)) == 5
    assert await store.results_for_drone("Drone404", 50) == []


# --- one application's view of a drone ---------------------------------------------------------


async def test_pending_and_results_for_drone_of_one_application(store: TaskStore) -> None:
    mine = [await create(store, priority=p) for p in (1, 4)]
    theirs = await create(store, app_id="App002", priority=5)
    for app_id in (APP, "App002", APP):
        task = await claimed(store, app_id=app_id)
        await tick()
        await store.save_result(result_for(task.task_id))
    my_results = await store.results_for_drone(DRONE, 10)

    pending = await store.pending_for_drone(DRONE, 10, app_id=APP)
    results = await store.results_for_drone(DRONE, 10, app_id=APP)

    assert [t.task_id for t in pending] == [mine[1].task_id, mine[0].task_id]
    assert theirs.task_id in [t.task_id for t in await store.pending_for_drone(DRONE, 10)]
    assert await store.pending_for_drone(DRONE, 1, app_id=APP) == pending[:1]
    assert len(my_results) == 3
    assert results == [my_results[0], my_results[2]]
    assert await store.results_for_drone(DRONE, 1, app_id=APP) == [my_results[0]]
    assert await store.results_for_drone(DRONE, 10, app_id="App404") == []


# --- tokens ------------------------------------------------------------------------------------


def a_token(jti: str, issued_at: str, **fields: object) -> TokenRecord:
    values: dict[str, object] = {
        "sub": "App001",
        "role": "app",
        "drones": None,
        "issued_at": issued_at,
        "expires_at": "2099-01-01T00:00:00.000Z",
        **fields,
    }
    return TokenRecord(jti=jti, **values)  # type: ignore[arg-type]


async def test_recorded_tokens_are_listed_newest_first_and_not_revoked(store: TaskStore) -> None:
    older = a_token("jti-1", "2024-01-01T00:00:00.000Z", drones=("Drone0*", "Scout-?"))
    newer = a_token("jti-2", "2024-01-02T00:00:00.000Z", sub="Drone001", role="drone")
    await store.record_token(older)
    await store.record_token(newer)
    await store.record_token(older)  # recording again changes nothing

    assert await store.list_tokens(10) == [newer, older]
    assert await store.list_tokens(1) == [newer]
    assert not await store.token_revoked("jti-1")
    assert await store.revoked_since("2000-01-01T00:00:00.000Z") == []


async def test_revoking_a_token_is_seen_by_every_query_and_kept(store: TaskStore) -> None:
    await store.record_token(a_token("jti-1", "2024-01-01T00:00:00.000Z"))
    before = now_iso()
    await tick()

    revoked = await store.revoke_token("jti-1")
    again = await store.revoke_token("jti-1")
    await store.record_token(a_token("jti-1", "2024-01-01T00:00:00.000Z"))  # re-recorded

    assert revoked.revoked_at is not None and revoked.revoked_at >= before
    assert revoked == a_token("jti-1", "2024-01-01T00:00:00.000Z", revoked_at=revoked.revoked_at)
    assert again.revoked_at == revoked.revoked_at
    assert await store.token_revoked("jti-1")
    assert await store.list_tokens(10) == [revoked]
    assert await store.revoked_since(before) == ["jti-1"]
    assert await store.revoked_since(iso_after(60)) == []


async def test_a_jti_never_recorded_can_be_revoked(store: TaskStore) -> None:
    await store.record_token(a_token("jti-1", "2024-01-01T00:00:00.000Z"))

    revoked = await store.revoke_token("minted-elsewhere")

    assert revoked.jti == "minted-elsewhere" and revoked.revoked_at is not None
    assert (revoked.sub, revoked.role, revoked.issued_at) == (None, None, None)
    assert await store.token_revoked("minted-elsewhere")
    assert not await store.token_revoked("jti-1")
    assert [t.jti for t in await store.list_tokens(10)] == ["jti-1", "minted-elsewhere"]


async def test_incarnation_stays_the_same_while_the_store_lives(store: TaskStore) -> None:
    # Given a store that answers (each adapter can tell its life: SQLite's is one, MongoDB's
    # the primary's process; tests/distributed/test_store_restart.py restarts mongod)
    first = await store.incarnation()
    # When it is asked again, with writes between
    await create(store)
    # Then the answer is the same
    assert first is not None
    assert await store.incarnation() == first


async def test_the_routed_incarnation_is_what_was_recorded_last(store: TaskStore) -> None:
    # Given the store's incarnation recorded as routed (a dispatcher's first look, or replay)
    incarnation = await store.incarnation()
    assert incarnation is not None
    await store.record_routed_incarnation(incarnation)
    # When it is read back, also after recording it again
    first = await store.routed_incarnation()
    await store.record_routed_incarnation(incarnation)
    # Then it is the store's incarnation: a dispatcher starting now has nothing to replay
    assert first == incarnation
    assert await store.routed_incarnation() == incarnation
