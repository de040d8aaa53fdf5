"""The connection cap follows the open files a gateway may hold: a gateway for thousands of
drones needs no setting to hold them, and still refuses cleanly before running out."""

import resource
from pathlib import Path

from gateway.http_protocol import OPEN_FILES_RESERVE, ConnectionLimits
from shared.settings import Settings


def test_unset_cap_is_the_raised_open_file_limit_less_the_reserve(tmp_path: Path) -> None:
    limits = ConnectionLimits.of(Settings(data_dir=tmp_path))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == hard or hard == resource.RLIM_INFINITY
    assert limits.max_connections == soft - OPEN_FILES_RESERVE


def test_a_set_cap_is_kept(tmp_path: Path) -> None:
    assert ConnectionLimits.of(Settings(data_dir=tmp_path, max_connections=5)).max_connections == 5
