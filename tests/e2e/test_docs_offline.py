"""The API docs load with no network: every script, style and icon comes from the gateway."""

import re

import httpx
import pytest

ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_page_loads_every_asset_from_the_gateway(
    http: httpx.AsyncClient, page: str
) -> None:
    response = await http.get(page)
    assert response.status_code == 200
    assert "//cdn" not in response.text and "https://" not in response.text
    assets = [a or b for a, b in ASSET.findall(response.text)]
    assert any(asset.endswith(".js") for asset in assets)
    for asset in assets:
        fetched = await http.get(asset)
        assert fetched.status_code == 200, asset
        assert fetched.content, asset
