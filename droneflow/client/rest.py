"""The few REST calls the SDK makes (catch-up after a reconnect, cancel, lookups).

They are rare, so the standard library serves them from a worker thread rather than adding an
HTTP client to the package's runtime dependencies.
"""

import asyncio
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from droneflow.client.errors import RequestFailed
from droneflow.client.link import Backoff, auth_headers

log = logging.getLogger("droneflow.client")

REQUEST_TIMEOUT_S = 10.0
RETRIED_STATUSES = frozenset({502, 503, 504})
"""A restarting server or one whose store is away: the same call succeeds later."""


class RestClient:
    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url
        self._headers = {"Accept": "application/json", **auth_headers(token)}

    async def get(
        self, path: str, params: dict[str, Any] | None = None, *, timeout_s: float = 30
    ) -> Any:
        return await self._retrying("GET", _with_query(path, params), None, timeout_s)

    async def post(
        self, path: str, body: dict[str, Any] | None = None, *, timeout_s: float = 30
    ) -> Any:
        return await self._retrying("POST", path, body, timeout_s)

    async def call_once(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        """One attempt without retries, for callers that report an absent server at once (the
        command line) rather than wait for it. Raises RequestFailed, or OSError when the server
        cannot be reached."""
        return await asyncio.to_thread(self._call, method, _with_query(path, params), body)

    async def _retrying(
        self, method: str, path: str, body: dict[str, Any] | None, timeout_s: float
    ) -> Any:
        """Calls made while the server restarts wait for it, up to `timeout_s`."""
        backoff = Backoff()
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    return await asyncio.to_thread(self._call, method, path, body)
                except RequestFailed as exc:
                    if exc.status not in RETRIED_STATUSES:
                        raise
                    problem: Exception = exc
                except OSError as exc:  # urllib's URLError included
                    problem = exc
                log.debug("%s %s: %s, retrying", method, path, problem)
                await asyncio.sleep(backoff.next_delay_s())

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self._headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self.base_url + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:  # it holds the response open
                raise RequestFailed(exc.code, _detail(exc)) from None


def _with_query(path: str, params: dict[str, Any] | None) -> str:
    query = {k: v for k, v in (params or {}).items() if v is not None}
    return f"{path}?{urllib.parse.urlencode(query)}" if query else path


def _detail(exc: urllib.error.HTTPError) -> Any:
    try:
        return json.loads(exc.read()).get("detail")
    except (ValueError, AttributeError, OSError):
        return exc.reason
