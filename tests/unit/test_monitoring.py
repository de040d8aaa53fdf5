"""The monitoring files of deploy/ against the code: every metric the Grafana dashboard queries
is one the services export, Prometheus scrapes every droneflow service of the compose file on
the port it serves metrics on, and the compose healthchecks ask the services' own endpoints."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import dispatcher.service
import gateway.app
import result_writer.service
import shared.health

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD: dict[str, Any] = json.loads((ROOT / "deploy" / "grafana" / "droneflow.json").read_text())
PROMETHEUS: dict[str, Any] = yaml.safe_load(
    (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
)
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES_WITH_METRICS = (gateway.app, dispatcher.service, result_writer.service, shared.health)

SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
}


def exported_names() -> set[str]:
    """Every sample name the services' metrics can have, labelled children observed or not."""
    assert SERVICES_WITH_METRICS  # imported for the metrics they register
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        if family.name.startswith("droneflow_")
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def metric_names(expr: str) -> set[str]:
    """The metric names of a PromQL expression: what is left once strings, label matchers,
    ranges, `by (…)` clauses, numbers and function calls are taken out."""
    stripped = re.sub(r'"[^"]*"', "", expr)
    stripped = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", stripped)
    clause = r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
    stripped = re.sub(clause, " ", stripped)
    names = re.findall(r"\b[A-Za-z_:][A-Za-z0-9_:]*\b(?!\s*\()", stripped)
    return {name for name in names if not re.fullmatch(r"(and|or|unless|bool|offset)", name)}


def _targets() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in DASHBOARD["panels"]
        for target in panel.get("targets", [])
    ]


def test_dashboard_panels_each_query_something_and_do_not_overlap() -> None:
    panels = DASHBOARD["panels"]
    assert panels and len({panel["id"] for panel in panels}) == len(panels)
    assert all(panel.get("targets") for panel in panels)
    cells = set()
    for panel in panels:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))


@pytest.mark.parametrize(("title", "expr"), _targets())
def test_dashboard_queries_only_metrics_the_services_export(title: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{title}: no metric in {expr!r}"
    assert names <= exported_names(), f"{title}: {sorted(names - exported_names())}"


def test_metric_names_reads_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, stage) (rate(droneflow_x_bucket{stage="a b"}[5m])))'
        " / sum(droneflow_y)"
    )
    assert metric_names(expr) == {"droneflow_x_bucket", "droneflow_y"}


def test_dashboard_covers_every_metric_issue_10_names() -> None:
    queried = set().union(*(metric_names(expr) for _, expr in _targets()))
    for name in (
        "droneflow_task_round_trip_seconds_bucket",
        "droneflow_task_stage_seconds_bucket",
        "droneflow_tasks_total",
        "droneflow_drones_connected",
        "droneflow_apps_connected",
        "droneflow_queue_depth",
        "droneflow_task_redeliveries_total",
        "droneflow_rejections_total",
    ):
        assert name in queried, name


def _metrics_port(service: str) -> int:
    return int(COMPOSE["services"][service]["environment"]["DRONEFLOW_METRICS_PORT"])


def test_prometheus_scrapes_every_droneflow_service_on_its_metrics_port() -> None:
    scraped = {
        (name, config["port"])
        for job in PROMETHEUS["scrape_configs"]
        for config in job.get("dns_sd_configs", [])
        for name in config["names"]
    }
    droneflow = [
        name
        for name, spec in COMPOSE["services"].items()
        if spec.get("image") == "droneflow:latest"
    ]
    assert {(name, _metrics_port(name)) for name in droneflow} <= scraped
    assert {name for name, _ in scraped} <= set(COMPOSE["services"])


@pytest.mark.parametrize("service", ["dispatcher", "result-writer"])
def test_compose_healthcheck_asks_the_service_readyz_on_its_port(service: str) -> None:
    test = " ".join(COMPOSE["services"][service]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{_metrics_port(service)}/readyz" in test


def test_compose_mounts_the_monitoring_files() -> None:
    prometheus = COMPOSE["services"]["prometheus"]["volumes"]
    grafana = COMPOSE["services"]["grafana"]["volumes"]
    assert any(v.startswith("./deploy/prometheus/prometheus.yml:") for v in prometheus)
    assert any(v.startswith("./deploy/grafana/droneflow.json:") for v in grafana)
