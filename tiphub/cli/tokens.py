"""`tiphub token`: the gateway's bearer tokens (CONTRACT section 5)."""

from __future__ import annotations

from typing import Annotated

import typer

from tiphub.cli.options import BrokerOpt, HomeOpt, settings_from
from tiphub.cli.terminal import console, out
from tiphub.container import Container

app = typer.Typer(no_args_is_help=True, help="Gateway bearer tokens.")


@app.command("issue")
def token_issue(
    role: Annotated[str, typer.Option("--role", help="publisher, analyst, releasing_officer, liaison or auditor")],
    subject: Annotated[str, typer.Option("--subject", help="Who the token is for (a person or a system).")],
    agency: Annotated[str | None, typer.Option("--agency", help="The agency a domestic role acts for.")] = None,
    partner: Annotated[str | None, typer.Option("--partner", help="The partner a liaison officer acts for.")] = None,
    ttl: Annotated[int, typer.Option("--ttl", help="Seconds until the token expires.")] = 8 * 3600,
    signin: Annotated[
        bool,
        typer.Option("--signin", help="A one-time console sign-in token (GATEWAY/#signin=TOKEN), not an API token."),
    ] = False,
    home: HomeOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Print a signed bearer token for the gateway (stdout: the token only)."""
    from adapters.sql.tokens import ACCESS, SIGNIN

    try:
        token = Container(settings_from(home=home)).tokens.issue(
            role, subject, agency=agency, partner=partner, ttl_s=ttl, use=SIGNIN if signin else ACCESS
        )
    except ValueError as exc:
        console.print(f"[red]refused[/red] {exc}")
        raise typer.Exit(2) from None
    print(token)


@app.command("revoke")
def token_revoke(
    token_or_id: Annotated[str, typer.Argument(help="The token, or its id (jti).")],
    reason: Annotated[str, typer.Option("--reason")] = "revoked by an operator",
    home: HomeOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Revoke a token: the gateway refuses it from the next request on."""
    from adapters.sql.tokens import token_id_of

    token_id = token_id_of(token_or_id) if token_or_id.count(".") == 2 else token_or_id
    revoked = Container(settings_from(home=home)).tokens.revoke(token_id, reason)
    out.print(f"token {token_id} {'revoked' if revoked else 'was already revoked'}")
