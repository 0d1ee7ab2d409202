"""`tiphub policy`: check the sharing agreements, and explain a decision field by field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tiphub.cli.options import BrokerOpt
from tiphub.cli.terminal import console, out

app = typer.Typer(no_args_is_help=True, help="Sharing agreements and decisions.")


AgreementsOpt = Annotated[
    Path | None, typer.Option("--agreements", exists=True, file_okay=False, help="Agreements directory.")
]


@app.command("check")
def policy_check(agreements: AgreementsOpt = None, broker: BrokerOpt = None) -> None:
    """Load every agreement and report the first error with its file, line and field."""
    from policies.loader import AGREEMENTS_DIR, AgreementError, load_directory

    try:
        loaded = load_directory(agreements or AGREEMENTS_DIR)
    except AgreementError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    for agreement in loaded:
        out.print(f"{agreement.label:<40} sha256 {agreement.hash[:16]}  ({agreement.source})")


@app.command("explain")
def policy_explain(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="One report in its JSON form.")],
    to: Annotated[str, typer.Option("--to", help="Recipient code, e.g. HSU-TH.")],
    at: Annotated[str | None, typer.Option("--at", help="Event time (RFC 3339); default now.")] = None,
    agreements: AgreementsOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Print what a recipient would receive of a report, field by field, and why."""
    from datetime import UTC, datetime

    from policies.loader import AGREEMENTS_DIR, AgreementError, load_directory
    from schemas.convert import ReportValidationError, parse_timestamp, report_from_json
    from streams.policy_explain import explain_sharing

    try:
        record = report_from_json(json.loads(file.read_text()))
        moment = parse_timestamp(at) if at else datetime.now(UTC)
        loaded = load_directory(agreements or AGREEMENTS_DIR)
    except (ReportValidationError, AgreementError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    out.print(explain_sharing(record, to, moment, loaded), highlight=False, soft_wrap=True)
