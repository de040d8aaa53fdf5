"""Schemathesis over the whole OpenAPI document: no response of 500 or above, and every
response is one the document declares.

Schemathesis drives Hypothesis per operation from a loop here, not through its pytest plugin,
which does not run under pytest 9 (it reads a private attribute pytest 9 removed)."""

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance

from tests.fuzz.conftest import FUZZ_EXAMPLES, server_errors_logged
from tests.processes import ServiceProcess

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance]


def test_every_operation_answers_with_a_declared_status_and_never_5xx(
    fuzzed_server: ServiceProcess,
) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed_server.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck)
        )
        def answers_as_declared(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS, timeout=10)

        answers_as_declared()

    assert server_errors_logged(fuzzed_server) == []
