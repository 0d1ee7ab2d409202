"""`tiphub simulate` and `tiphub publish`: the agencies' side, reports made up or read from a file, and retractions."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

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
    from producers.publisher import parse_jsonl_line
    from schemas.convert import ReportValidationError
    from tiphub.runtime import new_producer, publishers_for, resolve_broker

    settings = settings_from(broker, home, topic_prefix)
    if retract is not None:
        _retract(settings, retract, agency, reason, corrected_by)
        return
    if file is None:
        console.print("[red]give a JSON Lines file, or --retract REPORT_ID[/red]")
        raise typer.Exit(2)
    lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
    bootstrap = resolve_broker(settings)

    async def run() -> tuple[int, list[tuple[int, str, str]]]:
        producer = new_producer(bootstrap, settings.kafka_options())
        await producer.start()
        rejected: list[tuple[int, str, str]] = []
        published = 0
        try:
            agencies: list[str] = [agency] if agency else sorted(_agencies_in(lines))
            publishers = publishers_for(settings, bootstrap, producer, agencies)
            pending = []
            with Progress(
                TextColumn("publishing"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            ) as progress:
                task = progress.add_task("publish", total=len(lines))
                for number, line in enumerate(lines, start=1):
                    progress.advance(task)
                    if not line.strip():
                        continue
                    try:
                        report = parse_jsonl_line(line)
                        claimed = report.get("source_agency") if isinstance(report, dict) else None
                        publisher = publishers[agency] if agency else publishers.get(str(claimed))
                        if publisher is None:
                            raise ReportValidationError([_no_key_error()])
                        report_id, value = publisher.prepare(report)
                    except ReportValidationError as exc:
                        rejected.append((number, exc.reason, str(exc)))
                        continue
                    pending.append(await producer.send(publisher.topic, key=report_id.encode(), value=value))
                await asyncio.gather(*pending)
                published = len(pending)
        finally:
            await producer.stop()
        return published, rejected

    published, rejected = asyncio.run(run())
    for number, reason, message in rejected:
        console.print(f"[red]line {number}[/red] {reason}: {message}")
    out.print(f"published {published}, rejected {len(rejected)}")
    if rejected and not published:
        raise typer.Exit(1)


def _retract(settings: Settings, report_id: str, agency: str | None, reason: str, corrected_by: str | None) -> None:
    from producers.publisher import new_producer, seal_retraction
    from schemas.codec import WireCodec
    from tiphub.keys import KeyStore
    from tiphub.runtime import resolve_broker, topics_for

    if agency is None:
        console.print("[red]--retract needs --agency: only the reporting agency can retract its report[/red]")
        raise typer.Exit(2)
    if reason not in ("WITHDRAWN", "CORRECTED", "ENTERED_IN_ERROR"):
        console.print(f"[red]--reason {reason!r} is not one of WITHDRAWN, CORRECTED, ENTERED_IN_ERROR[/red]")
        raise typer.Exit(2)
    bootstrap = resolve_broker(settings)
    retraction = seal_retraction(
        report_id,
        agency=agency,
        reason=reason,
        corrected_by=corrected_by,
        agency_key=KeyStore(settings.home).agency_key(agency),
    )

    async def send() -> None:
        producer = new_producer(bootstrap, settings.kafka_options())
        await producer.start()
        try:
            await producer.send_and_wait(
                topics_for(settings).submitted,
                key=report_id.encode(),
                value=WireCodec().encode("tiphub.ReportRetraction", retraction),
            )
        finally:
            await producer.stop()

    asyncio.run(send())
    out.print(f"retraction of {report_id} published by {agency}")


def _agencies_in(lines: list[str]) -> set[str]:
    found = set()
    for line in lines:
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(value, dict) and isinstance(value.get("source_agency"), str):
            found.add(value["source_agency"])
    return found


def _no_key_error() -> Any:
    from schemas.convert import FieldError

    return FieldError(
        "source_agency",
        "unknown_agency",
        "no signing key for this agency under TIPHUB_HOME (use --agency)",
    )
