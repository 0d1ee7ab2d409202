"""The web console: static files that call the API like any client, for every role.

The page holds no credential: a sign-in opens an HttpOnly session cookie (gateway/routes/session.py). It is
served with a Content-Security-Policy that allows only its own scripts and styles and calls to this origin,
no framing, and no referrer, so nothing the page shows leaves it by a link, a frame or an injected script.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC = Path(__file__).parent.parent / "static"
ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

router = APIRouter()


@router.get("/", include_in_schema=False)
async def console() -> FileResponse:
    """The console: sign-in, then each role's screens."""
    return FileResponse(STATIC / "console.html", media_type="text/html", headers=HEADERS)


@router.get("/console/{asset}", include_in_schema=False)
async def asset(asset: str) -> FileResponse:
    if asset not in ASSETS:
        raise HTTPException(404, "no such file")
    return FileResponse(STATIC / asset, media_type=ASSETS[asset], headers=HEADERS)
