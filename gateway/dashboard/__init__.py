"""`/dashboard`: a live view of the fleet and its tasks, in plain HTML, CSS and JavaScript
shipped inside the package (no build step, nothing fetched from elsewhere).

The page polls the REST API: `/api/processing-tasks?updated_since=` every second for the task
table, counts and charts, and the fleet routes every two seconds. At start it also reads every
unfinished task (`?status=pending`, `?status=processing`), however old; finished tasks are kept
for the last 15 minutes, or `/dashboard?minutes=N`. Polling asks nothing new of
the server, works through any proxy and against any gateway of a distributed deployment (all
read the same store), and picks up again by itself after a gateway restarts; its cost is one
indexed range query per second per open page."""

from importlib.resources import files
from typing import Final

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response

router = APIRouter(include_in_schema=False)

_ASSETS: Final = files(__package__) / "static"
_TYPES: Final = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
# The page is served as one origin's own files; nothing else may load into it or run in it.
_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard() -> HTMLResponse:
    return HTMLResponse(_ASSETS.joinpath("index.html").read_text("utf-8"), headers=_HEADERS)


@router.get("/dashboard/static/{name}")
async def dashboard_asset(name: str) -> Response:
    media_type = _TYPES.get(name)
    if media_type is None:
        raise HTTPException(404, "no such dashboard asset")
    return Response(_ASSETS.joinpath(name).read_bytes(), media_type=media_type, headers=_HEADERS)
