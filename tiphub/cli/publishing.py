"""`tiphub simulate` and `tiphub publish`: the agencies' side, reports made up or read from a file, and retractions."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tiphub.cli.options import BrokerOpt, HomeOpt, PrefixOpt, settings_from
from tiphub.cli.terminal import console, out
from tiphub.settings import Settings


def simulate(
    cases: Annotated[int, typer.Option("--cases", min=1)] = 100,
    ctdc: Annotated[Path | None, typer.Option("--ctdc", exists=True, dir_okay=False, help="CTDC case CSV.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 7,
    noise: Annotated[float, typer.Option("--noise", min=0.0, max=1.0)] = 0.3,
    out_file: Annotated[Path | None, typer.Option("--out", help="JSON Lines file; default stdout.")] = None,
    truth: Annotated[Path | None, typer.Option("--truth", help="Write the ground truth here.")] = None,
    broker: BrokerOpt = None,
) -> None:
    """Realistic multi-agency reports for N trafficking cases."""
    from producers.simulate import simulate as run

    simulation = run(cases, seed=seed, ctdc=ctdc, noise=noise)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in simulation.reports)
    if out_file:
        out_file.write_text(lines)
        console.print(f"{len(simulation.reports)} reports for {cases} cases -> {out_file}")
    else:
        sys.stdout.write(lines)
    if truth:
        truth.write_text(json.dumps(simulation.truth(), indent=1) + "\n")


def publish(
    file: Annotated[
        Path | None, typer.Argument(exists=True, dir_okay=False, help="JSON Lines, one report a line.")
    ] = None,
    agency: Annotated[
        str | None,
        typer.Option(
            "--agency",
            help="Publish as this agency; omitted: each report as its source_agency with the demo keys.",
        ),
    ] = None,
    broker: BrokerOpt = None,
    home: HomeOpt = None,
    topic_prefix: PrefixOpt = None,
    retract: Annotated[str | None, typer.Option("--retract", help="Retract this report (of --agency) instead.")] = None,
    reason: Annotated[
        str, typer.Option("--reason", help="With --retract: WITHDRAWN, CORRECTED or ENTERED_IN_ERROR.")
    ] = "WITHDRAWN",
    corrected_by: Annotated[
        str | None, typer.Option("--corrected-by", help="With --retract: the correcting report.")
    ] = None,
) -> None:
    """Validate, encrypt, sign and publish reports; prints published and rejected counts.

    With --retract REPORT_ID --agency CODE: a signed retraction of one of the agency's reports."""
    from producers.publisher import publish_lines
    from tiphub.runtime import publishers_for, resolve_broker

    settings = settings_from(broker, home, topic_prefix)
    if retract is not None:
        _retract(settings, retract, agency, reason, corrected_by)
        return
    if file is None:
        console.print("[red]give a JSON Lines file, or --retract REPORT_ID[/red]")
        raise typer.Exit(2)
    lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
    bootstrap = resolve_broker(settings)
    with Progress(
        TextColumn("publishing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("publish", total=len(lines))
        done = asyncio.run(
            publish_lines(
                lines,
                bootstrap=bootstrap,
                publishers_for=lambda producer, agencies: publishers_for(settings, bootstrap, producer, agencies),
                agency=agency,
                client_options=settings.kafka_options(),
                on_line=lambda: progress.advance(task),
            )
        )
    for line in done.rejected:
        console.print(f"[red]line {line.number}[/red] {line.reason}: {line.message}")
    out.print(f"published {done.published}, rejected {len(done.rejected)}")
    if done.rejected and not done.published:
        raise typer.Exit(1)


def _retract(settings: Settings, report_id: str, agency: str | None, reason: str, corrected_by: str | None) -> None:
    from producers.publisher import RETRACTION_REASONS, retract_report
    from tiphub.keys import KeyStore
    from tiphub.runtime import resolve_broker, topics_for

    if agency is None:
        console.print("[red]--retract needs --agency: only the reporting agency can retract its report[/red]")
        raise typer.Exit(2)
    if reason not in RETRACTION_REASONS:
        console.print(f"[red]--reason {reason!r} is not one of {', '.join(RETRACTION_REASONS)}[/red]")
        raise typer.Exit(2)
    bootstrap = resolve_broker(settings)
    asyncio.run(
        retract_report(
            report_id,
            agency=agency,
            reason=reason,
            corrected_by=corrected_by,
            agency_key=KeyStore(settings.home).agency_key(agency),
            bootstrap=bootstrap,
            topic=topics_for(settings).submitted,
            client_options=settings.kafka_options(),
        )
    )
    out.print(f"retraction of {report_id} published by {agency}")
