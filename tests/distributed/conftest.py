import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

pytestmark = pytest.mark.distributed


@pytest.fixture(params=["sqlite", pytest.param("mongodb", marks=pytest.mark.mongodb)])
def store_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings that put a cluster on each store: the shared SQLite file cluster_env sets up, or
    a fresh MongoDB database (dropped with the server at the end of the session)."""
    if request.param == "sqlite":
        return {}
    parts = urlsplit(request.getfixturevalue("mongodb_url"))
    database = f"droneflow_cluster_{uuid.uuid4().hex[:12]}"
    return {"DRONEFLOW_STORE_URL": urlunsplit(parts._replace(path=f"/{database}"))}
