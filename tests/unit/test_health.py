"""Dependency: one log line when a dependency goes away, one when it is back (with how long),
and while it is away a probe at most once per interval."""

import logging
from pathlib import Path

import pytest

from shared.errors import TRANSIENT_ERRORS, StoreUnavailable
from shared.health import Dependency, observed
from shared.store import TaskStore
from shared.store.sqlite import SQLiteTaskStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_dependency_logs_once_away_and_once_back_with_the_duration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    dependency = Dependency("store", "gateway", clock=clock)
    with caplog.at_level(logging.WARNING, logger="shared.health"):
        # Given a dependency that fails three times
        for _ in range(3):
            dependency.failed("connection refused")
        clock.now += 6.5
        # When it answers twice
        dependency.succeeded()
        dependency.succeeded()
    # Then two lines in all
    assert [r.getMessage() for r in caplog.records] == [
        "gateway: store is unavailable: connection refused",
        "gateway: store is back after 6.5 s",
    ]
    assert dependency.available


def test_dependency_lets_one_probe_through_per_interval_while_away() -> None:
    clock = Clock()
    dependency = Dependency("rabbitmq", "gateway", probe_interval_s=0.5, clock=clock)
    assert dependency.should_try() and dependency.should_try()
    dependency.failed("timeout")
    assert not dependency.should_try()
    clock.now += 0.5
    assert dependency.should_try()
    assert not dependency.should_try()


async def test_observed_store_reports_its_outcomes(tmp_path: Path) -> None:
    dependency = Dependency("store", "test")
    raw = SQLiteTaskStore(tmp_path / "db.sqlite")
    store: TaskStore = observed(raw, dependency, TRANSIENT_ERRORS)
    # Given a store that is not open: its calls fail, and the dependency is away
    with pytest.raises(StoreUnavailable):
        await store.get_task("task_x")
    assert not dependency.available
    # When it opens, then the next call marks it back
    async with raw:
        assert await store.get_task("task_x") is None
    assert dependency.available


async def test_observed_store_refuses_at_once_while_away_but_for_probes(tmp_path: Path) -> None:
    clock = Clock()
    dependency = Dependency("store", "test", probe_interval_s=0.5, clock=clock)
    raw = SQLiteTaskStore(tmp_path / "db.sqlite")
    store: TaskStore = observed(
        raw, dependency, TRANSIENT_ERRORS, refuse_after_s=1.0, refusal=StoreUnavailable
    )
    # Given a store away for refuse_after_s
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.get_task("task_x")
    clock.now += 1.0
    # When a probe has failed, the next call is refused without reaching the store
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.get_task("task_x")
    with pytest.raises(StoreUnavailable, match=r"store unavailable for 1\.0 s"):
        await store.get_task("task_x")
    async with raw:
        # and even once it is back, until the next probe
        with pytest.raises(StoreUnavailable, match="store unavailable"):
            await store.get_task("task_x")
        # Then the next probe reaches it, and every call after that
        clock.now += 0.5
        assert await store.get_task("task_x") is None
        assert await store.get_task("task_x") is None
    assert dependency.available
