"""create_app(settings, state) -> FastAPI: the hub's HTTP face (CONTRACT section 5).

This module only assembles: the lifespan that starts the gateway's state (gateway/state.py), the
edge limits and request metrics, the exception handlers that answer and audit every refusal
(gateway/handlers.py), and one router per resource (gateway/routes/). A caller is served only from
their own scope (gateway/visibility.py). Every denial (a 404 for what the caller may not see
included) and every disclosure is audited.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.handlers import setup_exception_handlers
from gateway.limits import EdgeLimits
from gateway.metrics import GatewayMetrics
from gateway.routes import (
    audit,
    console,
    coverage,
    oidc,
    operations,
    reports,
    schemas,
    session,
    signals,
    summaries,
    taxii,
    triage,
)
from gateway.state import StateFactory
from gateway.version import __version__
from tiphub.settings import Settings


def create_app(settings: Settings, state: StateFactory) -> FastAPI:
    """`state`: builds and starts the gateway's state (tiphub/serving.py, from the composition root's container)."""
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with state(metrics) as started:
            app.state.gateway = started
            yield

    app = FastAPI(title="tiphub gateway", version=__version__, lifespan=lifespan)
    app.add_middleware(
        EdgeLimits,
        credential_rate=settings.gateway_rate_per_s,
        credential_burst=settings.gateway_rate_burst,
        address_rate=settings.gateway_address_rate_per_s,
        address_burst=settings.gateway_address_burst,
        max_body_bytes=settings.gateway_max_body_bytes,
    )
    app.middleware("http")(metrics.count)  # outermost: also counts what the edge limits refuse
    setup_exception_handlers(app)
    # In this order: a path matches the first route that takes it (/v1/signals/stream before /v1/signals/{id}).
    for resource in (
        operations,
        session,
        oidc,
        signals,
        summaries,
        audit,
        reports,
        taxii,
        coverage,
        console,
        triage,
        schemas,
    ):
        app.include_router(resource.router)
    return app
