"""`tiphub erase`: crypto-shred a person's keys by what an erasure request names."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from adapters.kafka.topic_io import KafkaTopicIO
from tiphub.cli.options import BrokerOpt, HomeOpt, PrefixOpt, settings_from
from tiphub.cli.terminal import console, out
from tiphub.container import Container


def erase(
    identifier: Annotated[
        str | None,
        typer.Option(
            "--identifier", help="The person by one identifier: KIND:VALUE[:ISSUER], e.g. PASSPORT:N01234567:KH."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="The person's name, with --dob.")] = None,
    dob: Annotated[str | None, typer.Option("--dob", help="Date of birth as reports recorded it, with --name.")] = None,
    subject_token: Annotated[
        str | None, typer.Option("--subject-token", help="Any linkage token of the person (hub-internal).")
    ] = None,
    reapply: Annotated[
        bool,
        typer.Option("--reapply", help="After restoring a vault backup: destroy again every key tip.erasures names."),
    ] = False,
    follow_links: Annotated[
        bool,
        typer.Option(
            "--follow-links",
            help="Also erase the records the hub's correlation links to the person (another spelling, no "
            "identifier): correlation can be wrong, so review the count the command reports first.",
        ),
    ] = False,
    reason: Annotated[str, typer.Option("--reason")] = "erasure request",
    requested_by: Annotated[str, typer.Option("--requested-by", envvar="USER")] = "operator",
    broker: BrokerOpt = None,
    home: HomeOpt = None,
    topic_prefix: PrefixOpt = None,
) -> None:
    """Erase a person by what the request names: an erasure fact, their keys destroyed, an audit event.

    The hub derives the person's linkage tokens itself, under every live linkage key version; what the
    request names is never printed, logged or written anywhere."""
    from domain.linkage import Linker
    from streams.erasure import ErasureRequestError, NoSuchPerson, erase_person, erasure_tokens, reapply_erasures
    from tiphub.keys import KeyStore
    from tiphub.runtime import resolve_broker, topics_for

    by_person = identifier is not None or name is not None or dob is not None
    if sum((by_person, subject_token is not None, reapply)) != 1:
        console.print("[red]give one of --identifier, --name with --dob, --subject-token or --reapply[/red]")
        raise typer.Exit(2)
    settings = settings_from(broker, home, topic_prefix)
    keys = KeyStore(settings.home)
    if by_person:
        current, earlier = Linker.live(keys.linkage_keys())
        try:
            tokens = erasure_tokens((current, *earlier), identifier=identifier, name=name, dob=dob)
        except ErasureRequestError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    else:
        tokens = [subject_token] if subject_token else []
    log = KafkaTopicIO(resolve_broker(settings), settings.kafka_options())
    vault = Container(settings).vault
    if reapply:
        named, deleted = asyncio.run(
            reapply_erasures(
                log,
                topics_for(settings),
                vault,
                requested_by=requested_by,
            )
        )
        out.print(f"erasures re-applied: {named} key(s) named on tip.erasures, {deleted} destroyed now")
        return
    try:
        done = asyncio.run(
            erase_person(
                log,
                topics_for(settings),
                vault,
                tokens,
                follow_links=follow_links,
                reason=reason,
                requested_by=requested_by,
                working=console.status,
            )
        )
    except NoSuchPerson:
        console.print("[red]no accepted report names such a person[/red]")
        raise typer.Exit(1) from None
    out.print(f"erased: {len(done.erased.subject_key_ids)} key(s) named, {done.erased.keys_deleted} destroyed")
    if done.linked_left:
        out.print(
            f"{len(done.linked_left)} more record(s) the hub's correlation links to this person were left: review "
            "them, then run again with --follow-links to erase them too"
        )
