"""The console's session: a sign-in opens it as an HttpOnly cookie, so no token sits in a URL or in the page.

`POST /v1/session` takes a one-time sign-in token (the link `tiphub up` prints carries one, in the URL's
fragment, which browsers never send; the page posts it and drops it from the address bar) or a hub access
token pasted by hand, and answers with a session cookie: for a sign-in token, a fresh access token for the same
caller that ends when the link would have (8 hours at most); for a pasted token, that token itself (revoking
it ends the session). A sign-in token opens one session only: it is revoked as it is used. Opening a session
needs the console's header, and revokes the session the browser had. The cookie is HttpOnly (no script
reads it), SameSite=Strict, and Secure over TLS; a request that changes something on its strength needs the
console's header too (gateway/deps.py `credential`). `DELETE /v1/session` signs out: the session's token is
revoked at once, so a copied cookie opens nothing either.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response

from adapters.sql.tokens import DEFAULT_TTL_S, SIGNIN
from domain.callers import Caller, TokenError
from gateway.deps import AnyCaller, AuditDep, StateDep, own_origin
from gateway.errors import NotPermitted
from gateway.security import CONSOLE_HEADER, SESSION_COOKIE

router = APIRouter(tags=["console"])

SESSION_TTL_S = DEFAULT_TTL_S


def who(caller: Caller) -> dict[str, Any]:
    return {
        "subject": caller.subject,
        "role": caller.role,
        "agency": caller.agency,
        "partner": caller.partner,
        "expires_at": caller.expires_at.isoformat(),
    }


def open_session(
    request: Request, response: Response, state: Any, caller: Caller, ttl_s: int, token: str | None = None
) -> dict[str, Any]:
    """Set the session cookie: `token` itself (a hub token pasted in: revoking it ends the session too), or a
    token issued now for `caller`. A session this browser already had is revoked: one browser, one session."""
    replaced = request.cookies.get(SESSION_COOKIE)
    if replaced:
        with contextlib.suppress(TokenError):  # expired or revoked already
            state.tokens.revoke(state.tokens.verify(replaced).token_id, "replaced by another sign-in")
    if token is None:
        token = state.tokens.issue(
            caller.role, caller.subject, agency=caller.agency, partner=caller.partner, ttl_s=max(1, ttl_s)
        )
    session = state.tokens.verify(token)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max(1, ttl_s),
        path="/",
        httponly=True,
        samesite="strict",
        secure=own_origin(request).startswith("https://"),
    )
    return who(session)


@router.post("/v1/session")
async def sign_in(
    request: Request,
    response: Response,
    state: StateDep,
    audit: AuditDep,
    signin: Annotated[str | None, Body(embed=True, max_length=4096)] = None,
    token: Annotated[str | None, Body(embed=True, max_length=4096)] = None,
) -> dict[str, Any]:
    """Open a console session with a one-time sign-in token (`signin`) or a hub access token (`token`). Only from
    the console (its header: another site's form cannot sign a browser in as someone else)."""
    if request.headers.get(CONSOLE_HEADER) != "1":
        raise NotPermitted("cross_site_request", "a session is opened from the console itself")
    if (signin is None) == (token is None):
        raise TokenError("malformed_token", "give one of signin (a sign-in link's token) or token")
    if signin is not None:
        caller = state.tokens.verify(signin, use=SIGNIN)
        if not state.tokens.revoke(caller.token_id, "used to sign in"):
            raise TokenError("token_revoked", "the token has been revoked")  # used twice at once
        # Never longer than the link allowed: a link about to expire opens a session about to end.
        ttl_s = min(SESSION_TTL_S, int((caller.expires_at - datetime.now(UTC)).total_seconds()))
        session = open_session(request, response, state, caller, ttl_s)
    else:
        caller = state.tokens.verify(token or "")
        ttl_s = min(SESSION_TTL_S, int((caller.expires_at - datetime.now(UTC)).total_seconds()))
        session = open_session(request, response, state, caller, ttl_s, token=token)
    await audit.write(
        "sign_in",
        f"{caller.role}:{caller.subject}",
        "signed_in",
        recipient=caller.acts_for,
        detail={"with": "signin_link" if signin is not None else "token"},
    )
    return session


@router.get("/v1/session")
async def current(caller: AnyCaller) -> dict[str, Any]:
    """Who this session (or token) is: role, and the agency or partner it acts for."""
    return who(caller)


@router.delete("/v1/session")
async def sign_out(caller: AnyCaller, response: Response, state: StateDep, audit: AuditDep) -> dict[str, str]:
    """Sign out: the session's token is revoked and the cookie cleared."""
    state.tokens.revoke(caller.token_id, "signed out")
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    await audit.write("sign_out", f"{caller.role}:{caller.subject}", "signed_out", recipient=caller.acts_for)
    return {"signed_out": caller.subject}
