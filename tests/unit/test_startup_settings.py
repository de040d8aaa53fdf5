"""A bad setting is named in one line, by its environment variable or its option."""

import pytest

from droneflow.startup import load_settings


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        (
            "DRONEFLOW_ACCESS_LOG",
            "maybe",
            "DRONEFLOW_ACCESS_LOG=maybe is not true or false; "
            "set DRONEFLOW_ACCESS_LOG to true or false",
        ),
        (
            "DRONEFLOW_LOG_FORMAT",
            "xml",
            "DRONEFLOW_LOG_FORMAT=xml is not one of the allowed values; "
            "set DRONEFLOW_LOG_FORMAT to one of 'text' or 'json'",
        ),
        (
            "DRONEFLOW_SWEEP_INTERVAL_S",
            "soon",
            "DRONEFLOW_SWEEP_INTERVAL_S=soon is not a valid number; "
            "set DRONEFLOW_SWEEP_INTERVAL_S to a number",
        ),
        (
            "DRONEFLOW_MAX_CONNECTIONS",
            "0",
            "DRONEFLOW_MAX_CONNECTIONS=0 should be greater than or equal to 1; "
            "set DRONEFLOW_MAX_CONNECTIONS to a value greater than or equal to 1",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    line: str,
) -> None:
    monkeypatch.setenv(variable, value)

    assert load_settings({}) is None
    assert capsys.readouterr().err == f"droneflow: error: {line}\n"


def test_a_bad_option_is_named_as_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_settings({"port": -1}) is None
    assert capsys.readouterr().err.startswith("droneflow: error: --port -1 should be greater than")


def test_two_bad_values_are_two_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DRONEFLOW_PORT", "abc")
    monkeypatch.setenv("DRONEFLOW_LOG_LEVEL", "loud")

    assert load_settings({}) is None
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert {line.split("=")[0] for line in lines} == {
        "droneflow: error: DRONEFLOW_PORT",
        "droneflow: error: DRONEFLOW_LOG_LEVEL",
    }
