"""create_app(settings) -> FastAPI: the hub's HTTP face (CONTRACT section 5).

This release serves identity (bearer tokens), the analysts' signal feed (pages and Server-Sent
Events with resumable cursors), one signal with its contributing reports as the caller may see
them, the schema-registry read API, liveness and metrics. Every denial and disclosure is audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette.sse import EventSourceResponse

from gateway.auditing import build_audit_router
from gateway.limits import EdgeLimits
from gateway.links import responding, signal_page_links
from gateway.release import build_router
from gateway.reports import build_reports_router
from gateway.security import AuditSink, GatewayKeys, invalid, require
from gateway.taxii import build_taxii_router
from gateway.views import CursorError, HubViews, decode_cursor, encode_cursor
from policies.loader import foreign_partners
from schemas.codec import WireCodec
from schemas.registry import load_registry
from streams.views import open_view
from streams.worker import group_id
from tiphub import __version__, crypto
from tiphub.database import Database
from tiphub.runtime import resolve_broker, token_authority, topics_for
from tiphub.settings import Settings
from tiphub.tokens import Caller
from tiphub.vault import KeyVault, SqlKeyVault

ANALYST = require("analyst")
STATIC = Path(__file__).with_name("static")
ANYONE_AUTHENTICATED = require()


TRIAGE = "tiphub.TriageEvent"


class TriageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently dropped

    state: Literal["new", "triaged", "actioned", "closed"]
    note: str = Field(default="", max_length=2000, description="Free text; sealed on the topic, shown to analysts.")


def triage_history(views: HubViews, signal_id: str, notes_key: bytes) -> list[dict[str, Any]]:
    return [
        {
            "state": e["state"],
            "actor": e["actor"],
            "at": e["at"],
            "note": crypto.unseal(notes_key, e["note_sealed"], e["event_id"].encode()).decode()
            if e["note_sealed"]
            else "",
        }
        for e in views.triage.get(signal_id, [])
    ]


def opened_view(views: HubViews, vault: KeyVault, caller: Caller, report_id: str) -> Any:
    view_json = views.view_json.get((caller.acts_for, report_id))
    if not views.decisions.get((caller.acts_for, report_id)) or not view_json:
        return None
    return open_view(json.loads(view_json), views.accepted[report_id], vault, views.erased)


def create_app(settings: Settings, bootstrap: str | None = None) -> FastAPI:
    metrics = CollectorRegistry()
    requests = Counter("tiphub_gateway_requests", "HTTP requests", ["method", "route", "status"], registry=metrics)
    signal_versions = Gauge("tiphub_gateway_signal_versions", "Signal versions the gateway holds", registry=metrics)
    decisions = Gauge(
        "tiphub_decisions", "Sharing decisions on tip.decisions", ["recipient", "allowed"], registry=metrics
    )
    lag = Gauge("tiphub_stage_lag", "Records a stream stage has not committed yet", ["stage"], registry=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        broker = bootstrap or resolve_broker(settings)
        topics = topics_for(settings)
        app.state.settings = settings
        app.state.bootstrap = broker
        app.state.submitted = {}  # report ids this gateway relayed, until the accept stage decides
        app.state.tokens = token_authority(settings)
        app.state.keys = keys = GatewayKeys.load(settings.home)
        app.state.vault = SqlKeyVault(Database(settings.vault_database), keys.vault_keks)
        app.state.audit = AuditSink(broker, topics, settings.kafka_options())
        app.state.views = HubViews(broker, topics, settings.kafka_options())
        await app.state.audit.start()
        await app.state.views.start()
        try:
            yield
        finally:
            await app.state.views.stop()
            await app.state.audit.stop()

    app = FastAPI(title="tiphub gateway", version=__version__, lifespan=lifespan)
    app.add_middleware(
        EdgeLimits,
        credential_rate=settings.gateway_rate_per_s,
        credential_burst=settings.gateway_rate_burst,
        address_rate=settings.gateway_address_rate_per_s,
        address_burst=settings.gateway_address_burst,
        max_body_bytes=settings.gateway_max_body_bytes,
    )

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        route = request.scope.get("route")
        requests.labels(request.method, getattr(route, "path", "unmatched"), str(response.status_code)).inc()
        return response

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process is up and serving."""
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def prometheus(request: Request) -> Response:
        """Prometheus metrics: requests by route and status, decisions by recipient, each stage's lag."""
        views: HubViews = request.app.state.views
        signal_versions.set(len(views.signals))
        counts: dict[tuple[str, bool], int] = {}
        for (recipient, _), allowed in list(views.decisions.items()):
            counts[(recipient, allowed)] = counts.get((recipient, allowed), 0) + 1
        for (recipient, allowed), n in counts.items():
            decisions.labels(recipient, str(allowed).lower()).set(n)
        for stage, behind in (await views.lag(lambda stage: group_id(settings, stage))).items():
            lag.labels(stage).set(behind)
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    # -- analyst feeds ---------------------------------------------------------------------
    def parse_cursor(after: str | None) -> dict[int, int]:
        try:
            return decode_cursor(after)
        except CursorError as exc:
            raise invalid((("query", "after"), str(exc), "value_error")) from None

    @app.get("/v1/signals", tags=["analysts"], responses=responding(200, "A page of signals.", signal_page_links()))
    async def signals(
        request: Request,
        caller: Annotated[Caller, Depends(ANALYST)],
        after: Annotated[str | None, Query(description="The `next` cursor of the previous page.")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        """Signal versions this caller may see, in log order, each (signal_id, version) once."""
        views: HubViews = request.app.state.views
        items, position = views.page(caller, parse_cursor(after), limit)
        if items:
            await request.app.state.audit.disclosed(
                caller, "signals", {"versions": [f"{s['signal_id']}@{s['version']}" for s, _ in items]}
            )
        return {"signals": [item for item, _ in items], "next": encode_cursor(position)}

    @app.get("/v1/signals/stream", tags=["analysts"])
    async def stream(
        request: Request,
        caller: Annotated[Caller, Depends(ANALYST)],
        after: Annotated[str | None, Query(description="Where to start; Last-Event-ID wins.")] = None,
    ) -> EventSourceResponse:
        """The same feed as Server-Sent Events. Each event's id is the cursor just after it."""
        views: HubViews = request.app.state.views
        position = parse_cursor(request.headers.get("last-event-id") or after)

        async def events() -> AsyncIterator[dict[str, str]]:
            nonlocal position
            while True:
                items, after_page = views.page(caller, position, 100)
                if items:
                    await request.app.state.audit.disclosed(
                        caller, "signals", {"versions": [f"{s['signal_id']}@{s['version']}" for s, _ in items]}
                    )
                for item, cursor in items:
                    yield {"id": encode_cursor(cursor), "event": "signal", "data": json.dumps(jsonable_encoder(item))}
                position = after_page
                if not items:
                    async with views.changed:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(views.changed.wait(), timeout=1.0)

        return EventSourceResponse(events(), ping=15)

    @app.get("/v1/signals/{signal_id}", tags=["analysts"])
    async def one_signal(request: Request, signal_id: str, caller: Annotated[Caller, Depends(ANALYST)]) -> Any:
        """The latest version of one signal and its contributing reports, as this caller may see them."""
        views: HubViews = request.app.state.views
        vault: KeyVault = request.app.state.vault
        version = views.latest.get(signal_id)
        shown = views.view(caller, version) if version else None
        if not isinstance(shown, dict):
            raise HTTPException(404, "no such signal visible to this caller")
        reports = []
        for report_id in shown["report_ids"]:
            facts = views.reports[report_id]
            reports.append(
                {
                    "report_id": report_id,
                    "source_agency": facts.agency,
                    "indicator_type": facts.indicator_type,
                    "observed_at": facts.observed_at,
                    "elements": list(facts.elements),
                    "fields_shared": views.fields.get((caller.acts_for, report_id), []),
                    # What the decision for the caller's agreement shares, sealed fields opened with the
                    # subjects' vault keys ([erased] once a person is erased); None when no decision shares it.
                    "view": opened_view(views, vault, caller, report_id),
                }
            )
        await request.app.state.audit.disclosed(
            caller, signal_id, {"version": shown["version"], "reports": shown["report_ids"]}
        )
        notes_key = request.app.state.keys.notes
        return {**shown, "reports": reports, "triage": triage_history(views, signal_id, notes_key)}

    app.include_router(build_router(settings.agreements_dir))
    app.include_router(build_audit_router())
    app.include_router(build_reports_router())
    app.include_router(build_taxii_router(foreign_partners(settings.agreements_dir)))

    @app.get("/v1/coverage", tags=["analysts"])
    async def coverage(request: Request, caller: Annotated[Caller, Depends(ANALYST)]) -> dict[str, Any]:
        """Collection Plan coverage per requirement (counts only; no report is named)."""
        rows = request.app.state.views.coverage
        return {"requirements": [rows[k] for k in sorted(rows)]}

    @app.get("/", include_in_schema=False)
    async def console() -> FileResponse:
        """The analyst console: a static page; it asks for a token and calls the API like any client."""
        return FileResponse(STATIC / "console.html", media_type="text/html")

    @app.post("/v1/signals/{signal_id}/triage", tags=["analysts"])
    async def triage(
        request: Request, signal_id: str, body: TriageRequest, caller: Annotated[Caller, Depends(ANALYST)]
    ) -> Any:
        """Set a signal's triage state with a note (the note is sealed on tip.triage)."""
        views: HubViews = request.app.state.views
        version = views.latest.get(signal_id)
        if version is None or not isinstance(views.view(caller, version), dict):
            raise HTTPException(404, "no such signal visible to this caller")
        event_id = str(uuid.uuid4())
        notes_key = request.app.state.keys.notes
        event = {
            "event_id": event_id,
            "signal_id": signal_id,
            "state": body.state,
            "actor": f"{caller.role}:{caller.subject}",
            "actor_agency": caller.agency,
            "at": datetime.now(UTC),
            "note_sealed": crypto.seal(notes_key, body.note.encode(), event_id.encode()) if body.note else None,
        }
        await request.app.state.audit.send(views.topics.triage, signal_id.encode(), WireCodec().encode(TRIAGE, event))
        await views.applied(event_id)
        return {"signal_id": signal_id, "triage": triage_history(views, signal_id, notes_key)}

    # -- Confluent Schema Registry read API ------------------------------------------------
    registry = load_registry()

    @app.get("/schemas/ids/{schema_id}", tags=["schemas"])
    async def schema_by_id(schema_id: int, caller: Annotated[Caller, Depends(ANYONE_AUTHENTICATED)]) -> Any:
        entry = registry.by_id(schema_id)
        if entry is None:
            return Response(
                json.dumps({"error_code": 40403, "message": "Schema not found"}),
                status_code=404,
                media_type="application/json",
            )
        return {"schema": json.dumps(entry.schema)}

    @app.get("/subjects", tags=["schemas"])
    async def subjects(caller: Annotated[Caller, Depends(ANYONE_AUTHENTICATED)]) -> list[str]:
        return registry.subjects()

    @app.get("/subjects/{subject}/versions/latest", tags=["schemas"])
    async def latest(subject: str, caller: Annotated[Caller, Depends(ANYONE_AUTHENTICATED)]) -> Any:
        versions = registry.versions(subject)
        if not versions:
            return Response(
                json.dumps({"error_code": 40401, "message": "Subject not found"}),
                status_code=404,
                media_type="application/json",
            )
        entry = versions[-1]
        return {"subject": subject, "id": entry.schema_id, "version": entry.version, "schema": json.dumps(entry.schema)}

    return app
