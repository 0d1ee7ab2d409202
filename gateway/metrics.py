"""The gateway's Prometheus metrics: what anyone may read (whether the stages keep up), and what only
auditors may (traffic by route, what the hub holds and decides per recipient)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from domain.read_models import ReadModels


class GatewayMetrics:
    def __init__(self) -> None:
        self.public = CollectorRegistry()
        self.full = CollectorRegistry()
        self.requests = Counter(
            "tiphub_gateway_requests", "HTTP requests", ["method", "route", "status"], registry=self.full
        )
        self.lag = Gauge(
            "tiphub_stage_lag", "Records a stream stage has not committed yet", ["stage"], registry=self.public
        )
        self.signal_versions = Gauge(
            "tiphub_gateway_signal_versions", "Signal versions the gateway holds, every scope", registry=self.full
        )
        self.decisions = Gauge(
            "tiphub_decisions", "Sharing decisions on tip.decisions", ["recipient", "allowed"], registry=self.full
        )
        self.read_at_start = Gauge(
            "tiphub_gateway_records_read_at_start",
            "Records the gateway read from the topics after it started, before it served (its read models "
            "resume from where they stood: only what was written while it was down)",
            registry=self.full,
        )
        self.read_since_start = Gauge(
            "tiphub_gateway_records_read",
            "Records folded into the read models since the gateway started",
            registry=self.full,
        )

    async def count(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """HTTP middleware: every request by method, route and status."""
        response = await call_next(request)
        route = request.scope.get("route")
        self.requests.labels(request.method, getattr(route, "path", "unmatched"), str(response.status_code)).inc()
        return response

    def for_anyone(self, stage_lag: dict[str, int]) -> bytes:
        for stage, behind in stage_lag.items():
            self.lag.labels(stage).set(behind)
        return generate_latest(self.public)

    def for_auditors(self, views: ReadModels, read_at_start: int, read_since_start: int) -> bytes:
        self.read_at_start.set(read_at_start)
        self.read_since_start.set(read_since_start)
        self.signal_versions.set(views.versions_held())
        for (recipient, allowed), n in views.decision_counts().items():
            self.decisions.labels(recipient, str(allowed).lower()).set(n)
        return generate_latest(self.full)
