"""The routes' typed dependencies: the started gateway's parts (gateway/state.py) and the verified caller.

A route names what it uses (`views: ViewsDep`, `caller: AnalystCaller`) and reads nothing from
`app.state` itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from adapters.kafka.tail import Tail
from domain.callers import Caller, TokenError
from domain.log import Publisher
from domain.ports import KeyVault
from domain.read_models import ReadModels
from gateway.cursors import CursorSealer
from gateway.errors import NoToken, NotPermitted
from gateway.security import CONSOLE_HEADER, SESSION_COOKIE, AuditSink
from gateway.state import GatewayState, started
from gateway.visibility import Visibility
from tiphub.settings import Settings

READY_WAIT_S = 20.0  # how long a request waits for a starting gateway's read models to catch up


async def gateway_state(request: Request) -> GatewayState:
    """The started gateway, once its read models have caught up with the topics as they stood when it started
    (a request to a gateway still catching up waits for it a while, then is told to retry: it is never
    answered from a store that is behind what the caller may have seen from another instance)."""
    state = started(request.app)
    if state is None:  # no route is served before the lifespan has started the gateway
        raise RuntimeError("the gateway has not started")
    if not state.tail.ready.is_set():
        try:
            await asyncio.wait_for(state.tail.ready.wait(), READY_WAIT_S)
        except TimeoutError:
            raise HTTPException(503, "catching up with the topics; retry shortly", {"Retry-After": "5"}) from None
    return state


StateDep = Annotated[GatewayState, Depends(gateway_state)]


def _settings(state: StateDep) -> Settings:
    return state.settings


def _views(state: StateDep) -> ReadModels:
    return state.views


def _visibility(state: StateDep) -> Visibility:
    return state.visibility


def _tail(state: StateDep) -> Tail:
    return state.tail


def _audit(state: StateDep) -> AuditSink:
    return state.audit


def _publisher(state: StateDep) -> Publisher:
    return state.publisher


def _cursors(state: StateDep) -> CursorSealer:
    return state.cursors


def _vault(state: StateDep) -> KeyVault:
    return state.vault


SettingsDep = Annotated[Settings, Depends(_settings)]
ViewsDep = Annotated[ReadModels, Depends(_views)]
VisibilityDep = Annotated[Visibility, Depends(_visibility)]
TailDep = Annotated[Tail, Depends(_tail)]
AuditDep = Annotated[AuditSink, Depends(_audit)]
PublisherDep = Annotated[Publisher, Depends(_publisher)]
CursorsDep = Annotated[CursorSealer, Depends(_cursors)]
VaultDep = Annotated[KeyVault, Depends(_vault)]


SAFE_METHODS = frozenset({"GET", "HEAD"})


def own_origin(request: Request) -> str:
    """The origin browsers reach this gateway at: as configured (behind a proxy that terminates TLS), or as the
    request came."""
    state = started(request.app)
    configured = state.settings.gateway_public_origin if state is not None else None
    return configured or f"{request.url.scheme}://{request.url.netloc}"


def credential(request: Request) -> str:
    """The bearer token of a request: its Authorization header, or the console's session cookie.

    The cookie is HttpOnly and SameSite=Strict (gateway/routes/session.py). A request that changes something
    on the strength of it must also carry the console's header, which another site's page cannot add
    without a CORS preflight this gateway never grants, and, if the browser names an Origin, come from this
    gateway's own: a forged form or link acts as nobody."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if header:
        if scheme.lower() != "bearer" or not token.strip():
            raise NoToken()
        return token.strip()
    session = request.cookies.get(SESSION_COOKIE, "")
    if not session:
        raise NoToken()
    if request.method not in SAFE_METHODS:
        origin = request.headers.get("origin")
        own = own_origin(request)
        if request.headers.get(CONSOLE_HEADER) != "1" or (origin is not None and origin != own):
            raise NotPermitted("cross_site_request", "a session's changes come from the console itself")
    return session


def require(*roles: str) -> Callable[[Request, GatewayState], Awaitable[Caller]]:
    """A dependency: the verified caller, if their role is one of `roles` (any role when none given)."""

    async def dependency(request: Request, state: StateDep) -> Caller:
        caller = state.tokens.verify(credential(request))  # a TokenError is a 401 (gateway/handlers.py)
        request.state.caller = caller  # who any refusal of this request names in the audit
        if roles and caller.role not in roles:
            raise NotPermitted("wrong_role", f"this needs the role {' or '.join(roles)}")
        return caller

    return dependency


def caller_of(request: Request) -> Caller | None:
    """The caller this request authenticated as; None before (or without) a verified token."""
    caller = getattr(request.state, "caller", None)
    return caller if isinstance(caller, Caller) else None


async def auditor_or_none(request: Request, state: StateDep) -> Caller | None:
    """The caller, if a valid auditor's token came with the request (where no token is needed: metrics)."""
    try:
        caller = state.tokens.verify(credential(request))
    except (TokenError, NoToken, NotPermitted):
        return None
    return caller if caller.role == "auditor" else None


AnyCaller = Annotated[Caller, Depends(require())]
AnalystCaller = Annotated[Caller, Depends(require("analyst"))]
PublisherCaller = Annotated[Caller, Depends(require("publisher"))]
OfficerCaller = Annotated[Caller, Depends(require("releasing_officer"))]
OfficerOrAnalystCaller = Annotated[Caller, Depends(require("releasing_officer", "analyst"))]
LiaisonCaller = Annotated[Caller, Depends(require("liaison"))]
AuditorCaller = Annotated[Caller, Depends(require("auditor"))]
AuditorOrNone = Annotated[Caller | None, Depends(auditor_or_none)]
