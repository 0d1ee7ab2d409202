"""Operations: liveness, readiness, and Prometheus metrics (more of them for auditors)."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.deps import AuditorOrNone, StateDep, TailDep
from gateway.version import __version__
from streams.stages import group_id

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process is up and serving."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz")
async def readyz(tail: TailDep) -> Response:
    """Readiness: 200 once the gateway has rebuilt its views from the topics after starting, else 503.
    `caught_up` says whether it has read every topic to its end as of this request (on a busy hub it is
    often a few records behind: the tests of a quiet hub wait for it)."""
    body = {"rebuilt": tail.ready.is_set(), "caught_up": await tail.caught_up()}
    return Response(json.dumps(body), status_code=200 if body["rebuilt"] else 503, media_type="application/json")


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus(state: StateDep, auditor: AuditorOrNone) -> Response:
    """Prometheus metrics: each stage's lag. With an auditor's token, also requests by route and status and
    what the hub holds and decides per recipient (counts that would tell an anonymous caller how much is
    drafted, approved or shared, and with whom)."""
    body = state.metrics.for_anyone(await state.lag.measure(lambda stage: group_id(state.settings, stage)))
    if auditor is not None:
        body += await asyncio.to_thread(
            state.metrics.for_auditors, state.views, state.tail.read_at_start, state.tail.folded
        )
    return Response(body, media_type=CONTENT_TYPE_LATEST)
