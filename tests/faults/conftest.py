import pytest

pytestmark = pytest.mark.faults
