"""The stylesheet and the script, read once from the package; no data in them, so no login needed."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.responses import Response

from .render import secure

_TYPES = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}
_FILES = {name: (resources.files("gateway.ui") / "static" / name).read_bytes() for name in _TYPES}

router = APIRouter(prefix="/ui/static", include_in_schema=False)


@router.get("/{name}")
async def asset(name: str) -> Response:
    if name not in _FILES:
        raise HTTPException(404, "no such file")
    response = secure(Response(_FILES[name], media_type=_TYPES[name]))
    response.headers["Cache-Control"] = "no-cache"
    return response
