"""`tiphub broker`: start and stop the local broker under TIPHUB_HOME."""

from __future__ import annotations

from typing import Annotated

import typer

from tiphub.cli.options import BrokerOpt, HomeOpt, settings_from
from tiphub.cli.terminal import console, out

app = typer.Typer(no_args_is_help=True, help="The local broker: noida-db or Apache Kafka.")


@app.command("start")
def broker_start(
    home: HomeOpt = None,
    broker: BrokerOpt = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            envvar="TIPHUB_BROKER_KIND",
            help="noida (embedded, zero install) or kafka (Apache Kafka from Maven Central).",
        ),
    ] = None,
    brokers: Annotated[int, typer.Option("--brokers", help="Apache Kafka nodes: 1, or 3 for a KRaft cluster.")] = 1,
) -> None:
    """Start a local broker in the background (if none is running) and create the hub's topics.

    --kind kafka --brokers 3: three Apache Kafka KRaft nodes on loopback, topics with three replicas and
    min.insync.replicas=2. With --broker: create (or check) the hub's topics on that Kafka instead."""
    from adapters.kafka.embedded import BrokerError
    from tiphub.runtime import find_local_broker, resolve_broker, start_local_broker

    settings = settings_from(broker, home)
    try:
        if not broker:
            running = find_local_broker(settings)
            wanted = kind or settings.broker_kind or "noida"
            if running is not None and (wanted != running.KIND or len(running.pids) != brokers):
                console.print(
                    f"[red]a {running.KIND} broker with {len(running.pids)} node(s) already runs under "
                    f"{settings.home}: `tiphub broker stop` first[/red]"
                )
                raise typer.Exit(1)
            if running is None:
                start_local_broker(settings, wanted, brokers, progress=console.print)
        out.print(resolve_broker(settings))
    except BrokerError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc


@app.command("stop")
def broker_stop(home: HomeOpt = None, broker: BrokerOpt = None) -> None:
    """Stop the local broker, of either kind (noida-db saves its data; Apache Kafka shuts down in order).
    An external broker is not tiphub's to stop."""
    from tiphub.runtime import find_local_broker

    if broker:
        console.print(f"[red]{broker} is an external broker: tiphub does not manage it[/red]")
        raise typer.Exit(1)

    running = find_local_broker(settings_from(home=home))
    if running is None:
        out.print("not running")
        return
    running.stop()
    out.print("stopped")
