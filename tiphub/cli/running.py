"""`tiphub worker`, `gateway`, `up` and `bench`: run the hub's processes, alone or all together."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from tiphub.cli.options import BrokerOpt, HomeOpt, PrefixOpt, settings_from
from tiphub.cli.terminal import console, log_to_stderr, out


def worker(
    broker: BrokerOpt = None,
    home: HomeOpt = None,
    topic_prefix: PrefixOpt = None,
    instance_id: Annotated[
        str | None,
        typer.Option(
            "--instance-id",
            envvar="TIPHUB_INSTANCE_ID",
            help="Stable per worker; give each worker its own.",
        ),
    ] = None,
) -> None:
    """Run the stream processors."""
    from tiphub.runtime import resolve_broker
    from tiphub.worker import run_worker

    log_to_stderr()
    settings = settings_from(broker, home, topic_prefix, instance_id=instance_id)
    asyncio.run(run_worker(settings, resolve_broker(settings)))


def gateway(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8700,
    broker: BrokerOpt = None,
    home: HomeOpt = None,
    topic_prefix: PrefixOpt = None,
) -> None:
    """Run the gateway (HTTP)."""
    import uvicorn

    from gateway.app import create_app
    from tiphub.container import Container
    from tiphub.serving import gateway_state

    log_to_stderr()
    settings = settings_from(broker, home, topic_prefix)
    uvicorn.run(create_app(settings, gateway_state(Container(settings))), host=host, port=port, log_level="warning")


def bench(
    ctx: typer.Context,
    reports: Annotated[int, typer.Option("--reports", help="Reports in the as-fast-as-possible phase.")] = 10_000,
    rate: Annotated[float, typer.Option("--rate", help="Reports per second in the steady phase.")] = 250.0,
    seconds: Annotated[float, typer.Option("--seconds", help="Length of the steady phase.")] = 30.0,
    workers: Annotated[int, typer.Option("--workers", min=1, help="tiphub worker processes.")] = 1,
    partitions: Annotated[int, typer.Option("--partitions", min=1, help="Partitions of the bench's topics.")] = 6,
    warmup: Annotated[int, typer.Option("--warmup", min=1)] = 200,
    seed: Annotated[int, typer.Option("--seed")] = 11,
    ctdc: Annotated[Path | None, typer.Option("--ctdc", exists=True, dir_okay=False)] = None,
    output: Annotated[Path | None, typer.Option("--out", help="Also write the JSON result here.")] = None,
    broker: BrokerOpt = None,
    home: Annotated[
        Path | None, typer.Option("--home", help="Keys and broker data (default: a temporary directory).")
    ] = None,
    broker_kind: Annotated[
        str | None,
        typer.Option(
            "--broker-kind",
            envvar="TIPHUB_BROKER_KIND",
            help="Without --broker: start noida (default) or kafka (one Apache Kafka node). With it: its kind.",
        ),
    ] = None,
) -> None:
    """Throughput and latency of the whole pipeline, with two ceilings measured in the same run; prints JSON.
    The result names the broker it ran on. `tiphub bench history`: restarts and queries as a history grows."""
    if ctx.invoked_subcommand is not None:
        return  # `tiphub bench history`: its own options
    from tiphub.bench import BenchConfig, BenchError, dumps, run_bench

    config = BenchConfig(
        reports=reports,
        rate=rate,
        seconds=seconds,
        workers=workers,
        partitions=partitions,
        warmup=warmup,
        seed=seed,
        ctdc=ctdc,
    )
    try:
        result = run_bench(config, broker, home, console, broker_kind)
    except BenchError as exc:
        console.print(f"[red]bench failed:[/red] {exc}")
        raise typer.Exit(1) from None
    emit(dumps(result), output)


def emit(text: str, output: Path | None) -> None:
    """A bench's JSON result: written to `output` if given, and printed (highlighted on a terminal)."""
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
    out.print_json(text) if out.is_terminal else print(text)


def bench_history(
    reports: Annotated[
        list[int],
        typer.Option(
            "--reports",
            help="History sizes, smallest first; repeat the option (one history grows through each).",
        ),
    ] = [10_000],  # noqa: B006  # typer reads the default; it is never mutated
    workers: Annotated[int, typer.Option("--workers", min=1, help="tiphub worker processes.")] = 1,
    partitions: Annotated[int, typer.Option("--partitions", min=1, help="Partitions of the topics.")] = 6,
    requests: Annotated[int, typer.Option("--requests", min=1, help="Timed requests per kind and size.")] = 200,
    query_budget_s: Annotated[
        float, typer.Option("--query-budget-s", help="Seconds at most per kind of request and size.")
    ] = 120.0,
    releases: Annotated[int, typer.Option("--releases", min=0, help="Summaries released to the partner.")] = 3,
    sealers: Annotated[int, typer.Option("--sealers", min=1, help="Processes sealing and signing reports.")] = 1,
    seed: Annotated[int, typer.Option("--seed")] = 11,
    ctdc: Annotated[Path | None, typer.Option("--ctdc", exists=True, dir_okay=False)] = None,
    output: Annotated[Path | None, typer.Option("--out", help="Also write the JSON result here.")] = None,
    broker: BrokerOpt = None,
    home: Annotated[
        Path | None, typer.Option("--home", help="Keys, broker data and logs (default: a temporary directory).")
    ] = None,
    broker_kind: Annotated[
        str,
        typer.Option(
            "--broker-kind",
            help="Without --broker: start kafka (one Apache Kafka node, default) or noida. With it: its kind.",
        ),
    ] = "kafka",
) -> None:
    """Restart to serving, peak RSS and query latencies (signal page, detail, partner pull, who-saw) as one
    history grows through each --reports size; prints JSON."""
    from tiphub.bench import BenchError, dumps
    from tiphub.bench_history import HistoryConfig, run_history

    config = HistoryConfig(
        sizes=tuple(reports),
        workers=workers,
        partitions=partitions,
        requests=requests,
        query_budget_s=query_budget_s,
        releases=releases,
        sealers=sealers,
        seed=seed,
        ctdc=ctdc,
    )
    try:
        result = run_history(config, broker, home, console, broker_kind)
    except BenchError as exc:
        console.print(f"[red]bench history failed:[/red] {exc}")
        raise typer.Exit(1) from None
    emit(dumps(result), output)
    if "failed" in result:  # what was measured before the failure is printed and written all the same
        console.print(
            f"[red]bench history failed[/red] at {result['failed']['reports']:,} reports: {result['failed']['error']}"
        )
        raise typer.Exit(1)


def up(
    rate: Annotated[float, typer.Option("--rate", help="Simulated reports per second.")] = 20.0,
    ctdc: Annotated[Path | None, typer.Option("--ctdc", exists=True, dir_okay=False)] = None,
    seed: Annotated[int, typer.Option("--seed")] = 7,
    port: Annotated[int, typer.Option("--port")] = 8700,
    broker: BrokerOpt = None,
    home: HomeOpt = None,
) -> None:
    """The whole hub on this machine, with simulated agencies publishing. Ctrl-C stops it."""
    from tiphub.hub import run_hub

    settings = settings_from(broker, home)
    raise typer.Exit(run_hub(settings, rate=rate, ctdc=ctdc, seed=seed, port=port, console=console))
