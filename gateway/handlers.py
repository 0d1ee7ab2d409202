"""Exception handlers: each error a request can end in, mapped to its HTTP answer in this one place.

Every security denial is audited here, naming the caller the request authenticated as (if it got that
far), before the answer goes out. The errors themselves carry a reason, never a status code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler

from domain.callers import TokenError
from domain.release import ActionRefused
from gateway.cursors import CursorError
from gateway.deps import caller_of
from gateway.errors import NoToken, NotPermitted, NotVisible, Refused
from gateway.security import invalid
from gateway.state import started
from gateway.taxii import CollectionNotFound, TaxiiBadRequest, TaxiiResponse

STATUS: dict[type[Refused], int] = {NoToken: 401, NotPermitted: 403, NotVisible: 404}


async def audited(request: Request, reason: str) -> None:
    """Every denial is audited, also by a gateway still catching up with the topics."""
    state = started(request.app)
    if state is None:
        raise RuntimeError("the gateway has not started")
    await state.audit.denied(request, reason, caller_of(request))


async def refused(request: Request, exc: Refused) -> Response:
    await audited(request, exc.reason)
    status = next(code for kind, code in STATUS.items() if isinstance(exc, kind))
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, NoToken) else None
    return await http_exception_handler(request, HTTPException(status, str(exc), headers=headers))


async def token_refused(request: Request, exc: TokenError) -> Response:
    """A token that does not verify: 401, the reason named to the client as RFC 6750 has it."""
    await audited(request, exc.reason)
    challenge = f'Bearer error="invalid_token", reason="{exc.reason}"'
    return await http_exception_handler(request, HTTPException(401, str(exc), headers={"WWW-Authenticate": challenge}))


async def action_refused(request: Request, exc: ActionRefused) -> Response:
    """A release rule refuses: 409 if the summary's state does not allow it now, 403 if the caller may not."""
    await audited(request, exc.reason)
    status = 409 if exc.kind == "wrong_state" else 403
    return await http_exception_handler(request, HTTPException(status, str(exc)))


async def cursor_refused(request: Request, exc: CursorError) -> Response:
    """A cursor this gateway did not issue to this caller for this feed: the `after` parameter is invalid."""
    return await request_validation_exception_handler(request, invalid((("query", "after"), str(exc), "value_error")))


async def taxii_bad_request(request: Request, exc: TaxiiBadRequest) -> Response:
    await audited(request, "bad_request")
    return TaxiiResponse({"title": "Bad request", "description": str(exc), "http_status": "400"}, status_code=400)


async def taxii_not_found(request: Request, exc: CollectionNotFound) -> Response:
    await audited(request, "not_found")
    return TaxiiResponse({"title": "Collection not found", "http_status": "404"}, status_code=404)


HANDLERS: dict[type[Exception], Callable[[Request, Any], Awaitable[Response]]] = {
    Refused: refused,
    TokenError: token_refused,
    ActionRefused: action_refused,
    CursorError: cursor_refused,
    TaxiiBadRequest: taxii_bad_request,
    CollectionNotFound: taxii_not_found,
}


def setup_exception_handlers(app: FastAPI) -> None:
    for error, handler in HANDLERS.items():
        app.add_exception_handler(error, handler)
