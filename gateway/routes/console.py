"""The analyst console: a static page; it asks for a token and calls the API like any client."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).parent.parent / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def console() -> FileResponse:
    """The analyst console: a static page; it asks for a token and calls the API like any client."""
    return FileResponse(STATIC / "console.html", media_type="text/html")
