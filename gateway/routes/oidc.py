"""The console's sign-in with the organisation's identity provider (OpenID Connect, gateway/oidc.py).

`GET /v1/session/oidc/start` sends the browser to the provider; `GET /v1/session/oidc/callback` takes it back,
checks what the provider says, and opens a console session (gateway/routes/session.py) for the role and agency
or partner the person's claims map to, then sends the browser to the console. A sign-in that cannot be
finished (another browser's or a stale answer, a refused code, an ID token not for this hub, claims that map
to no role the hub knows) is a 403 naming why, audited as a denial with a stable reason, and opens nothing.
`GET /v1/session/oidc` tells the console's sign-in page whether to offer the button.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from domain.callers import Caller
from gateway.deps import AuditDep, StateDep, own_origin
from gateway.errors import Refused
from gateway.handlers import refused
from gateway.oidc import (
    PENDING_COOKIE,
    PENDING_PATH,
    PENDING_TTL_S,
    ClaimMapping,
    PendingSealer,
    ProviderUnavailable,
    RelyingParty,
)
from gateway.routes.session import SESSION_TTL_S, open_session
from gateway.state import GatewayState
from policies.loader import AGREEMENTS_DIR, load_directory
from policies.model import Agreement, OriginatorAgreement

router = APIRouter(tags=["console"])

NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def relying_party(request: Request, state: GatewayState) -> RelyingParty:
    """This gateway's relying party, made at its first sign-in and kept (its discovery and key caches with it);
    404 when no identity provider is configured."""
    if state.settings.oidc_issuer is None:
        raise HTTPException(404, "sign-in with an identity provider is not configured here")
    party: RelyingParty | None = getattr(request.app.state, "oidc", None)
    if party is None:
        mapping = ClaimMapping.of(state.settings, known_agencies(state), state.partners)
        party = request.app.state.oidc = RelyingParty(state.settings, mapping, PendingSealer(state.keys.cursors))
    return party


def known_agencies(state: GatewayState) -> set[str]:
    """The domestic agencies the hub's agreements name: as recipients, or as originators of reports."""
    agencies: set[str] = set()
    for agreement in load_directory(state.settings.agreements_dir or AGREEMENTS_DIR):
        if isinstance(agreement, OriginatorAgreement):
            agencies.add(agreement.originator)
        elif isinstance(agreement, Agreement) and agreement.kind == "domestic":
            agencies.add(agreement.recipient)
    return agencies


def forget_pending(response: Response) -> None:
    response.delete_cookie(PENDING_COOKIE, path=PENDING_PATH, httponly=True, samesite="lax")


@router.get("/v1/session/oidc")
async def oidc_configured(state: StateDep) -> dict[str, Any]:
    """Whether this gateway signs people in with an identity provider, and where the console sends them to."""
    enabled = state.settings.oidc_issuer is not None
    return {"enabled": enabled, **({"start": "/v1/session/oidc/start"} if enabled else {})}


@router.get(
    "/v1/session/oidc/start",
    status_code=302,
    response_class=RedirectResponse,
    responses={404: {"description": "not configured"}, 503: {"description": "the identity provider is unreachable"}},
)
async def oidc_start(request: Request, state: StateDep) -> Response:
    """Send the browser to the identity provider to sign in (a 302), with the pending sign-in in a sealed cookie."""
    party = relying_party(request, state)
    try:
        location, sealed = await party.start(str(request.url_for("oidc_callback")))
    except ProviderUnavailable:
        raise HTTPException(
            503, "the identity provider cannot be reached; retry shortly", {"Retry-After": "10"}
        ) from None
    response = RedirectResponse(location, status_code=302, headers=NO_STORE)
    # Lax, not Strict: the provider sends the browser back with a top-level navigation from its own site.
    response.set_cookie(
        PENDING_COOKIE,
        sealed,
        max_age=PENDING_TTL_S,
        path=PENDING_PATH,
        httponly=True,
        samesite="lax",
        secure=own_origin(request).startswith("https://"),
    )
    return response


@router.get(
    "/v1/session/oidc/callback",
    name="oidc_callback",
    status_code=303,
    response_class=RedirectResponse,
    responses={
        403: {"description": "the sign-in is refused (the reason is audited)"},
        404: {"description": "not configured"},
    },
)
async def oidc_callback(request: Request, state: StateDep, audit: AuditDep) -> Response:
    """The provider's answer: a console session for the person it signed in, then the console (a 303)."""
    party = relying_party(request, state)
    try:
        identity = await party.finish(request.query_params, request.cookies.get(PENDING_COOKIE))
    except Refused as exc:
        answer = await refused(request, exc)  # audited and answered as every refusal is (gateway/handlers.py)
        answer.headers.update(NO_STORE)
        forget_pending(answer)
        return answer
    response = RedirectResponse("/", status_code=303, headers=NO_STORE)
    forget_pending(response)
    # Who the session is for (open_session issues its token; this Caller has none yet).
    caller = Caller(identity.subject, identity.role, identity.agency, identity.partner, "", datetime.now(UTC))
    open_session(request, response, state, caller, SESSION_TTL_S)
    await audit.write(
        "sign_in",
        f"{identity.role}:{identity.subject}",
        "signed_in",
        recipient=caller.acts_for,
        detail={"with": "oidc"},
    )
    return response
