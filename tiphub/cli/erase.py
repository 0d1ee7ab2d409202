"""`tiphub erase`: crypto-shred a person's keys by what an erasure request names."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from tiphub.cli.options import BrokerOpt, HomeOpt, PrefixOpt, settings_from
from tiphub.cli.terminal import console, out


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
    from streams.erasure import ErasureRequestError, erase_keys, erasure_tokens, linked_subject_keys, reapply_erasures
    from streams.feeds import read_decoded
    from streams.linking import LINKS, Link
    from tiphub.database import Database
    from tiphub.keys import KeyStore
    from tiphub.linkage import Linker
    from tiphub.runtime import resolve_broker, topics_for
    from tiphub.vault import SqlKeyVault

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
    bootstrap = resolve_broker(settings)
    vault = SqlKeyVault(Database(settings.vault_database), keys.vault_keks)
    if reapply:
        named, deleted = asyncio.run(
            reapply_erasures(
                bootstrap,
                topics_for(settings),
                vault,
                requested_by=requested_by,
                client_options=settings.kafka_options(),
            )
        )
        out.print(f"erasures re-applied: {named} key(s) named on tip.erasures, {deleted} destroyed now")
        return
    topics = topics_for(settings)

    def decoded(topic: str) -> list[dict[str, Any]]:
        return asyncio.run(read_decoded(bootstrap, topic, settings.partitions, settings.kafka_options()))

    # Records erased before are found again by the tokens their erasure facts list, so that a second run
    # (with --follow-links, after a review) still knows whom the request names.
    erased = {f["subject_key_id"]: f for f in decoded(topics.erasures) if "subject_key_id" in f}
    wanted = set(tokens)
    by_request = sorted(
        {key_id for token in tokens for key_id in vault.key_ids_for_token(token)}
        | {key_id for key_id, fact in erased.items() if wanted & set(fact["tokens"])}
    )
    if not by_request:
        console.print("[red]no accepted report names such a person[/red]")
        raise typer.Exit(1)
    with console.status("working out whom the hub's correlation links to them"):
        retracted = {r["report_id"] for r in decoded(topics.retractions)}
        links = [
            Link(**link)
            for batch in asyncio.run(read_decoded(bootstrap, topics.links, 1, settings.kafka_options(), expect=LINKS))
            for link in batch["links"]
        ]
        linked = linked_subject_keys(decoded(topics.accepted), links, by_request, retracted, erased)
    left = [k for k in by_request + (linked if follow_links else []) if k not in erased]
    result = asyncio.run(
        erase_keys(
            bootstrap,
            topics,
            vault,
            left,
            reason=reason,
            requested_by=requested_by,
            client_options=settings.kafka_options(),
        )
    )
    out.print(f"erased: {len(result.subject_key_ids)} key(s) named, {result.keys_deleted} destroyed")
    still = [k for k in linked if k not in erased and not follow_links]
    if still:
        out.print(
            f"{len(still)} more record(s) the hub's correlation links to this person were left: review them, "
            "then run again with --follow-links to erase them too"
        )
