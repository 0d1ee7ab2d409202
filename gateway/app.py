"""create_app(settings) -> FastAPI: the hub's HTTP face (CONTRACT section 5).

This module serves identity (bearer tokens), the analysts' signal feed (pages and Server-Sent
Events with sealed, resumable cursors), one signal with its contributing reports as the caller may
see them, triage, coverage, the schema-registry read API, liveness and metrics; the routers it
includes serve the release workflow, partners, TAXII, agencies and auditors. A caller is served
only from their own scope (gateway/views.py). Every denial (a 404 for what the caller may not see
included) and every disclosure is audited.
"""

from __future__ import annotations

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
from gateway.broker import KafkaPublisher, StageLag, Tail
from gateway.cursors import CursorError, CursorSealer
from gateway.limits import EdgeLimits
from gateway.links import responding, signal_page_links
from gateway.paging import signal_page
from gateway.release import build_router
from gateway.reports import build_reports_router
from gateway.security import AuditSink, GatewayKeys, invalid, require
from gateway.taxii import build_taxii_router
from gateway.views import HubViews
from gateway.visibility import Visibility
from policies.engine import ERASED
from policies.loader import foreign_partners
from schemas.codec import WireCodec
from schemas.registry import load_registry
from streams.broker_quirks import resolve_quirks
from streams.views import open_view
from streams.worker import group_id
from tiphub import __version__, crypto
from tiphub.database import Database
from tiphub.envelope_keys import EnvelopeKeys
from tiphub.runtime import resolve_broker, token_authority, topics_for
from tiphub.settings import Settings
from tiphub.tokens import Caller, TokenError
from tiphub.vault import KeyRequest, KeyVault, SqlKeyVault

ANALYST = require("analyst")
STATIC = Path(__file__).with_name("static")
ANYONE_AUTHENTICATED = require()


TRIAGE = "tiphub.TriageEvent"
SIGNAL_FEED = "signals"
REPORT_HEADLINE = ("source_agency", "indicator_type", "observed_at", "elements")


class TriageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently dropped

    state: Literal["new", "triaged", "actioned", "closed"]
    note: str = Field(default="", max_length=2000, description="Free text; sealed on the topic, shown to analysts.")


def note_key_id(signal_id: str, event_id: str) -> str:
    """Each triage note has its own vault key, which depends on the keys of the people of the signal:
    erasing any of them shreds the note (it may name them)."""
    return f"note/{signal_id}/{event_id}"


def triage_history(views: HubViews, vault: KeyVault, signal_id: str) -> list[dict[str, Any]]:
    history = []
    for event in views.triage.events(signal_id):
        note = ""
        if event["note_sealed"]:
            key_id = note_key_id(signal_id, event["event_id"])
            key = None if key_id in views.erasures.key_ids else vault.get(key_id)
            try:
                note = ERASED if key is None else crypto.unseal(key, event["note_sealed"], key_id.encode()).decode()
            except crypto.DecryptionError:
                note = ERASED
        history.append({"state": event["state"], "actor": event["actor"], "at": event["at"], "note": note})
    return history


def create_app(settings: Settings, bootstrap: str | None = None) -> FastAPI:
    public_metrics = CollectorRegistry()  # for anyone: whether the stages keep up
    full_metrics = CollectorRegistry()  # for auditors: traffic by route, what the hub holds and decides per recipient
    requests = Counter("tiphub_gateway_requests", "HTTP requests", ["method", "route", "status"], registry=full_metrics)
    lag = Gauge("tiphub_stage_lag", "Records a stream stage has not committed yet", ["stage"], registry=public_metrics)
    signal_versions = Gauge(
        "tiphub_gateway_signal_versions", "Signal versions the gateway holds, every scope", registry=full_metrics
    )
    decisions = Gauge(
        "tiphub_decisions", "Sharing decisions on tip.decisions", ["recipient", "allowed"], registry=full_metrics
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        broker = bootstrap or resolve_broker(settings)  # resolve_broker installs the broker kind's quirks
        if bootstrap:
            resolve_quirks(broker, settings.broker_kind, **settings.kafka_options())
        topics = topics_for(settings)
        app.state.settings = settings
        app.state.bootstrap = broker
        app.state.submitted = {}  # report ids this gateway relayed, until the accept stage decides
        app.state.tokens = token_authority(settings)
        app.state.keys = keys = GatewayKeys.load(settings.home)
        app.state.cursors = CursorSealer(keys.cursors)
        app.state.vault = SqlKeyVault(Database(settings.vault_database), keys.vault_keks)
        app.state.envelope_keys = EnvelopeKeys(app.state.vault, settings.envelope_epoch_s)
        app.state.publisher = publisher = KafkaPublisher(broker, settings.kafka_options())
        app.state.audit = AuditSink(publisher, topics)
        app.state.views = views = HubViews(topics)
        app.state.visibility = Visibility(views)
        app.state.tail = tail = Tail(broker, topics, views.tailed(), views.apply, settings.kafka_options())
        app.state.lag = StageLag(broker, topics, tail, settings.kafka_options())
        await publisher.start()
        try:
            await tail.start()
            try:
                yield
            finally:
                await tail.stop()
        finally:
            await publisher.stop()

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

    @app.get("/readyz", tags=["operations"])
    async def readyz(request: Request) -> Response:
        """Readiness: 200 once the gateway has rebuilt its views from the topics after starting, else 503.
        `caught_up` says whether it has read every topic to its end as of this request (on a busy hub it is
        often a few records behind: the tests of a quiet hub wait for it)."""
        tail: Tail = request.app.state.tail
        body = {"rebuilt": tail.ready.is_set(), "caught_up": await tail.caught_up()}
        return Response(json.dumps(body), status_code=200 if body["rebuilt"] else 503, media_type="application/json")

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def prometheus(request: Request) -> Response:
        """Prometheus metrics: each stage's lag. With an auditor's token, also requests by route and status and
        what the hub holds and decides per recipient (counts that would tell an anonymous caller how much is
        drafted, approved or shared, and with whom)."""
        views: HubViews = request.app.state.views
        stage_lag: StageLag = request.app.state.lag
        for stage, behind in (await stage_lag.measure(lambda stage: group_id(settings, stage))).items():
            lag.labels(stage).set(behind)
        body = generate_latest(public_metrics)
        if await auditor_or_none(request) is not None:
            signal_versions.set(views.signals.versions_held())
            for (recipient, allowed), n in views.decisions.counts().items():
                decisions.labels(recipient, str(allowed).lower()).set(n)
            body += generate_latest(full_metrics)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def auditor_or_none(request: Request) -> Caller | None:
        """The caller, if a valid auditor's token came with the request (metrics need none)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        try:
            caller = request.app.state.tokens.verify(token.strip())
        except TokenError:
            return None
        return caller if caller.role == "auditor" else None

    # -- analyst feeds ---------------------------------------------------------------------
    def position_of(request: Request, caller: Caller, after: str | None) -> int:
        try:
            return request.app.state.cursors.open(SIGNAL_FEED, caller.acts_for, after, 1)[0]  # type: ignore[no-any-return]
        except CursorError as exc:
            raise invalid((("query", "after"), str(exc), "value_error")) from None

    def cursor_at(request: Request, caller: Caller, position: int) -> str:
        return request.app.state.cursors.seal(SIGNAL_FEED, caller.acts_for, [position])  # type: ignore[no-any-return]

    @app.get("/v1/signals", tags=["analysts"], responses=responding(200, "A page of signals.", signal_page_links()))
    async def signals(
        request: Request,
        caller: Annotated[Caller, Depends(ANALYST)],
        after: Annotated[str | None, Query(description="The `next` cursor of the previous page.")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        """Signal versions of the caller's agency, correlated from the reports it may see, in feed order,
        each (signal_id, version) once."""
        views: HubViews = request.app.state.views
        visibility: Visibility = request.app.state.visibility
        scope = caller.acts_for or ""
        items, position = signal_page(views.signals, visibility, scope, position_of(request, caller, after), limit)
        if items:
            await request.app.state.audit.disclosed(
                caller, "signals", {"versions": [f"{s['signal_id']}@{s['version']}" for s, _ in items]}
            )
        return {"signals": [item for item, _ in items], "next": cursor_at(request, caller, position)}

    @app.get("/v1/signals/stream", tags=["analysts"])
    async def stream(
        request: Request,
        caller: Annotated[Caller, Depends(ANALYST)],
        after: Annotated[str | None, Query(description="Where to start; Last-Event-ID wins.")] = None,
    ) -> EventSourceResponse:
        """The same feed as Server-Sent Events. Each event's id is the cursor just after it."""
        views: HubViews = request.app.state.views
        visibility: Visibility = request.app.state.visibility
        tail: Tail = request.app.state.tail
        position = position_of(request, caller, request.headers.get("last-event-id") or after)

        async def events() -> AsyncIterator[dict[str, str]]:
            nonlocal position
            while True:
                items, after_page = signal_page(views.signals, visibility, caller.acts_for or "", position, 100)
                if items:
                    await request.app.state.audit.disclosed(
                        caller, "signals", {"versions": [f"{s['signal_id']}@{s['version']}" for s, _ in items]}
                    )
                for item, at in items:
                    yield {
                        "id": cursor_at(request, caller, at),
                        "event": "signal",
                        "data": json.dumps(jsonable_encoder(item)),
                    }
                position = after_page
                if not items:
                    await tail.next_batch(1.0)

        return EventSourceResponse(events(), ping=15)

    async def own_signal(request: Request, caller: Caller, signal_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(latest record, as the caller sees it) of a signal of the caller's scope; a 404, audited, for any
        other id (another scope's, or none at all: the answer is the same)."""
        views: HubViews = request.app.state.views
        visibility: Visibility = request.app.state.visibility
        record = views.signals.latest(caller.acts_for or "", signal_id)
        shown = visibility.render(caller.acts_for or "", record) if record is not None else None
        if not isinstance(shown, dict):
            await request.app.state.audit.denied(request, "not_found", caller)
            raise HTTPException(404, "no such signal visible to this caller")
        return record, shown  # type: ignore[return-value]

    @app.get("/v1/signals/{signal_id}", tags=["analysts"])
    async def one_signal(request: Request, signal_id: str, caller: Annotated[Caller, Depends(ANALYST)]) -> Any:
        """The latest version of one signal and its contributing reports, as this caller may see them."""
        views: HubViews = request.app.state.views
        visibility: Visibility = request.app.state.visibility
        vault: KeyVault = request.app.state.vault
        _, shown = await own_signal(request, caller, signal_id)
        reports = []
        for report_id in shown["report_ids"]:
            found = visibility.report_view(caller.acts_for or "", report_id)
            view, fields = found if found is not None else (None, [])
            accepted = views.accepted.records[report_id]
            opened = open_view(view, accepted, vault, views.erasures.key_ids) if view is not None else None
            reports.append(
                {
                    "report_id": report_id,
                    # Each as the caller's decision shows it: a generalised date is the month, a dropped one absent.
                    **({k: opened.get(k) for k in REPORT_HEADLINE} if isinstance(opened, dict) else {}),
                    "fields_shared": [f["path"] for f in fields if f["rule"] != "drop"],
                    # Only what is shown, with the rule and clause that let it: a withheld field is not listed
                    # (listing it would say that the report has it).
                    "field_decisions": [f for f in fields if f["rule"] != "drop"],
                    "view": opened,
                }
            )
        await request.app.state.audit.disclosed(
            caller, signal_id, {"version": shown["version"], "reports": shown["report_ids"]}
        )
        return {**shown, "reports": reports, "triage": triage_history(views, vault, signal_id)}

    app.include_router(build_router(settings.agreements_dir))
    app.include_router(build_audit_router())
    app.include_router(build_reports_router())
    app.include_router(build_taxii_router(foreign_partners(settings.agreements_dir)))

    @app.get("/v1/coverage", tags=["analysts"])
    async def coverage(request: Request, caller: Annotated[Caller, Depends(ANALYST)]) -> dict[str, Any]:
        """Collection Plan coverage per requirement over the reports the caller's agency may see (counts
        only; no report is named)."""
        rows = request.app.state.views.coverage.by_scope.get(caller.acts_for, {})
        return {"requirements": [{k: v for k, v in rows[r].items() if k != "scope"} for r in sorted(rows)]}

    @app.get("/", include_in_schema=False)
    async def console() -> FileResponse:
        """The analyst console: a static page; it asks for a token and calls the API like any client."""
        return FileResponse(STATIC / "console.html", media_type="text/html")

    @app.post("/v1/signals/{signal_id}/triage", tags=["analysts"])
    async def triage(
        request: Request, signal_id: str, body: TriageRequest, caller: Annotated[Caller, Depends(ANALYST)]
    ) -> Any:
        """Set a signal's triage state with a note: the caller's agency's own triage of its own signal. The
        note is sealed on tip.triage under a key of its own that goes with any person of the signal."""
        views: HubViews = request.app.state.views
        vault: KeyVault = request.app.state.vault
        record, _ = await own_signal(request, caller, signal_id)
        event_id = str(uuid.uuid4())
        sealed = None
        if body.note:
            key_id = note_key_id(signal_id, event_id)
            people = tuple(
                subject["subject_key_id"]
                for report_id in record["report_ids"]
                for subject in views.accepted.records[report_id]["subjects"]
            )
            key = vault.get_or_create_many([KeyRequest(key_id, signal_id, (), people)])[key_id]
            sealed = crypto.seal(key, body.note.encode(), key_id.encode())
        event = {
            "event_id": event_id,
            "signal_id": signal_id,
            "state": body.state,
            "actor": f"{caller.role}:{caller.subject}",
            "actor_agency": caller.agency,
            "at": datetime.now(UTC),
            "note_sealed": sealed,
        }
        await request.app.state.publisher.send(
            views.topics.triage, signal_id.encode(), WireCodec().encode(TRIAGE, event)
        )
        await request.app.state.tail.until(lambda: views.folded(event_id))
        return {"signal_id": signal_id, "triage": triage_history(views, vault, signal_id)}

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
