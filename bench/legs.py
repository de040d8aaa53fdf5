"""Where a round trip's time goes: each task's send and receive as the load generator saw them,
split at the moments the server stamped in its SQLite store (--legs).

    submit   app sends → create_task's batch starts (frame, validation, wait for the store)
    route    → the claim's batch starts (create's commit, intake, dispatcher, drone queue)
    drone    → save_result's batch starts (claim's commit, frame to the drone, its answer)
    notify   → the app's generator reads the result (save_result's commit, frame to the app)

The server stamps with a millisecond clock read once per store batch, so each leg is good to
about a millisecond; the generator's own delays (a late read of a frame that had arrived) fall
in `submit` and `notify`, the server's store and event loop in all four."""

import json
import sqlite3
from datetime import datetime
from pathlib import Path

from report import Run, percentile_ms

LEGS = ("submit", "route", "drone", "notify")


def _seconds(text: str) -> float:
    # The server's clock is cut down to the millisecond: half of one is the unbiased guess.
    return datetime.fromisoformat(text).timestamp() + 0.0005


Stamps = dict[tuple[str, str], tuple[float, float, float]]


def server_stamps(db_path: Path) -> Stamps:
    """(app_id, bench_id) → (created, delivered, finished) of every finished task in the store;
    every app numbers its tasks alike."""
    stamps: Stamps = {}
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT app_id, input_data, created_at, delivered_at, finished_at FROM processingTasks"
            " WHERE finished_at IS NOT NULL AND delivered_at IS NOT NULL"
        )
        for app_id, input_data, created, delivered, finished in rows:
            bench_id = json.loads(input_data).get("bench_id")
            if isinstance(bench_id, str):
                times = (_seconds(created), _seconds(delivered), _seconds(finished))
                stamps[app_id, bench_id] = times
    return stamps


def print_legs(title: str, runs: list[Run], stamps: Stamps) -> None:
    legs: dict[str, list[float]] = {leg: [] for leg in (*LEGS, "total")}
    for run in runs:
        for app_id, bench_id, sent, received in run.result.wall_times:
            if (times := stamps.get((app_id, bench_id))) is None:
                continue
            created, delivered, finished = times
            moments = (sent, created, delivered, finished, received)
            for leg, start, end in zip(LEGS, moments[:-1], moments[1:], strict=True):
                legs[leg].append(end - start)
            legs["total"].append(received - sent)
    if not legs["total"]:
        print(f"legs of the {title}: no task found in the store")
        return
    print(f"legs of the {title} (ms, {len(legs['total'])} tasks, all runs):")
    for leg, values in legs.items():
        values.sort()
        print(
            f"  {leg:7s} p50 {percentile_ms(values, 0.5):6.1f}"
            f" p90 {percentile_ms(values, 0.9):6.1f} p99 {percentile_ms(values, 0.99):6.1f}"
            f" mean {1000 * sum(values) / len(values):6.1f}"
        )
