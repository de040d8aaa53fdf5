"""Schemathesis over the whole OpenAPI document, with tokens off and on (as an admin, an app, a
drone and with none): no response of 500 or above, and every response is one the document
declares, body included.

Schemathesis drives Hypothesis per operation from a loop here, not through its pytest plugin,
which does not run under pytest 9 (it reads a private attribute pytest 9 removed)."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.conftest import FUZZ_EXAMPLES, SecuredServer, server_errors_logged
from tests.processes import ServiceProcess

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def fuzz_every_operation(server: ServiceProcess, headers: dict[str, str]) -> None:
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck)
        )
        def answers_as_declared(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS, headers=headers, timeout=10)

        answers_as_declared()

    assert server_errors_logged(server) == []


def test_every_operation_answers_with_a_declared_status_and_never_5xx(
    fuzzed_server: ServiceProcess,
) -> None:
    fuzz_every_operation(fuzzed_server, {})


@pytest.mark.parametrize(
    "caller",
    [("admin", "ops"), ("app", "FuzzApp"), ("drone", "FuzzDrone"), None],
    ids=["admin", "app", "drone", "no-token"],
)
def test_with_tokens_on_every_operation_answers_as_declared(
    secured_fuzzed_server: SecuredServer, caller: tuple[str, str] | None
) -> None:
    headers = {}
    if caller is not None:
        role, sub = caller
        token = secured_fuzzed_server.keys.issue(role, sub, 3600)  # type: ignore[arg-type]
        headers["Authorization"] = f"Bearer {token}"
    fuzz_every_operation(secured_fuzzed_server.server, headers)
