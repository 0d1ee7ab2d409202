"""Collection Plan coverage over the reports the caller's agency may see."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.deps import AnalystCaller, ViewsDep

router = APIRouter(tags=["analysts"])


@router.get("/v1/coverage")
async def coverage(caller: AnalystCaller, views: ViewsDep) -> dict[str, Any]:
    """Collection Plan coverage per requirement over the reports the caller's agency may see (counts
    only; no report is named)."""
    rows = views.coverage(caller.acts_for)
    return {"requirements": [{k: v for k, v in rows[r].items() if k != "scope"} for r in sorted(rows)]}
