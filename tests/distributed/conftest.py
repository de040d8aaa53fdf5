import pytest

pytestmark = pytest.mark.distributed
