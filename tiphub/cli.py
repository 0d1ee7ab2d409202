"""The `tiphub` command line (CONTRACT section 6)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tiphub.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="tiphub: counter-trafficking intelligence hub.")
keys_app = typer.Typer(no_args_is_help=True, help="Hub and agency keys.")
broker_app = typer.Typer(no_args_is_help=True, help="The local broker: noida-db or Apache Kafka.")
app.add_typer(keys_app, name="keys")
token_app = typer.Typer(no_args_is_help=True, help="Gateway bearer tokens.")
app.add_typer(token_app, name="token")
app.add_typer(broker_app, name="broker")
policy_app = typer.Typer(no_args_is_help=True, help="Sharing agreements and decisions.")
app.add_typer(policy_app, name="policy")
console = Console(stderr=True)
out = Console()


# CONTRACT section 6: every command takes --broker; those that need no broker accept and ignore it.
BrokerOpt = Annotated[
    str | None,
    typer.Option("--broker", envvar="TIPHUB_BROKER", help="Kafka host:port; default: embedded broker."),
]
HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", envvar="TIPHUB_HOME", help="State directory (default ./.tiphub)."),
]
PrefixOpt = Annotated[str | None, typer.Option("--topic-prefix", envvar="TIPHUB_TOPIC_PREFIX", hidden=True)]


def settings_from(
    broker: str | None = None,
    home: Path | None = None,
    topic_prefix: str | None = None,
    **more: Any,
) -> Settings:
    overrides: dict[str, Any] = {
        k: v for k, v in {"broker": broker, "home": home, "topic_prefix": topic_prefix, **more}.items() if v is not None
    }
    return Settings(**overrides)


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format='{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}',
        stream=sys.stderr,
    )
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# -- keys -----------------------------------------------------------------------------------
@keys_app.command("init")
def keys_init(home: HomeOpt = None, broker: BrokerOpt = None) -> None:
    """Create the hub's keys and demo agency keys (idempotent; never overwrites)."""
    from tiphub.runtime import init_keys

    settings = settings_from(home=home)
    setup = init_keys(settings)
    for path in setup.created:
        out.print(f"created {path}")
    out.print(
        f"{len(setup.created)} key file(s) created under {settings.home / 'keys'}; "
        f"{len(setup.registered)} agency key(s) registered"
    )


@token_app.command("issue")
def token_issue(
    role: Annotated[str, typer.Option("--role", help="publisher, analyst, releasing_officer, liaison or auditor")],
    subject: Annotated[str, typer.Option("--subject", help="Who the token is for (a person or a system).")],
    agency: Annotated[str | None, typer.Option("--agency", help="The agency a domestic role acts for.")] = None,
    partner: Annotated[str | None, typer.Option("--partner", help="The partner a liaison officer acts for.")] = None,
    ttl: Annotated[int, typer.Option("--ttl", help="Seconds until the token expires.")] = 8 * 3600,
    home: HomeOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Print a signed bearer token for the gateway (stdout: the token only)."""
    from tiphub.runtime import token_authority

    try:
        token = token_authority(settings_from(home=home)).issue(
            role, subject, agency=agency, partner=partner, ttl_s=ttl
        )
    except ValueError as exc:
        console.print(f"[red]refused[/red] {exc}")
        raise typer.Exit(2) from None
    print(token)


@token_app.command("revoke")
def token_revoke(
    token_or_id: Annotated[str, typer.Argument(help="The token, or its id (jti).")],
    reason: Annotated[str, typer.Option("--reason")] = "revoked by an operator",
    home: HomeOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Revoke a token: the gateway refuses it from the next request on."""
    from adapters.sql.tokens import token_id_of
    from tiphub.runtime import token_authority

    token_id = token_id_of(token_or_id) if token_or_id.count(".") == 2 else token_or_id
    revoked = token_authority(settings_from(home=home)).revoke(token_id, reason)
    out.print(f"token {token_id} {'revoked' if revoked else 'was already revoked'}")


@keys_app.command("list")
def keys_list(home: HomeOpt = None, broker: BrokerOpt = None) -> None:
    """Agency keys in the registry, with their revocation state."""
    from adapters.sql.database import Database
    from adapters.sql.registry import KeyRegistry

    registry = KeyRegistry(Database(settings_from(home=home).registry_database))
    table = Table("key id", "agency", "state")
    for key in sorted(registry.all(), key=lambda k: k.key_id):
        table.add_row(key.key_id, key.agency, "revoked" if key.revoked_at else "active")
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, home: HomeOpt = None, broker: BrokerOpt = None) -> None:
    """Revoke an agency key: submissions signed with it are rejected from now on."""
    from adapters.sql.database import Database
    from adapters.sql.registry import KeyRegistry

    if not KeyRegistry(Database(settings_from(home=home).registry_database)).revoke(key_id):
        console.print(f"[red]no active key {key_id}[/red]")
        raise typer.Exit(1)
    out.print(f"revoked {key_id}")


@keys_app.command("register")
def keys_register(
    agency: Annotated[str, typer.Option("--agency", help="The agency the key signs for.")],
    public_key: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Its Ed25519 public key (PEM).")],
    home: HomeOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Register an agency's new signing key beside its current one (rotation: revoke the old one after)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from adapters.sql.database import Database
    from adapters.sql.registry import KeyRegistry

    key = serialization.load_pem_public_key(public_key.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        console.print("[red]not an Ed25519 public key[/red]")
        raise typer.Exit(1)
    key_id = KeyRegistry(Database(settings_from(home=home).registry_database)).register(agency, key)
    out.print(f"registered {key_id}")


@keys_app.command("rotate-hub")
def keys_rotate_hub(home: HomeOpt = None, broker: BrokerOpt = None) -> None:
    """A new hub encryption key. Envelopes sealed for the previous one still open until it is retired."""
    from tiphub.keys import KeyStore

    old, new = KeyStore(settings_from(home=home).home).rotate_hub_key()
    out.print(f"hub key {new} is current; {old} still opens what was sealed for it (retire it with retire-hub)")


@keys_app.command("retire-hub")
def keys_retire_hub(key_id: str, home: HomeOpt = None, broker: BrokerOpt = None) -> None:
    """Delete a previous hub key: envelopes still sealed for it are refused (wrong_hub_key) from then on."""
    from tiphub.keys import KeyStore

    if not KeyStore(settings_from(home=home).home).retire_hub_key(key_id):
        console.print(f"[red]no previous hub key {key_id}[/red]")
        raise typer.Exit(1)
    out.print(f"retired {key_id}")


@keys_app.command("rotate-vault-kek")
def keys_rotate_vault_kek(home: HomeOpt = None, broker: BrokerOpt = None) -> None:
    """A new vault KEK. Keys wrapped with the previous one still open until rewrap-vault has run."""
    from tiphub.keys import KeyStore

    old, new = KeyStore(settings_from(home=home).home).rotate_vault_kek()
    out.print(
        f"vault KEK {new} is current; {old} still opens what it wrapped. In 30 s every process has read it: "
        "then run `tiphub keys rewrap-vault`, and retire-vault-kek once it reports nothing left"
    )


@keys_app.command("rewrap-vault")
def keys_rewrap_vault(home: HomeOpt = None, broker: BrokerOpt = None) -> None:
    """Wrap every data key in the vault with the current KEK (idempotent, while the hub runs)."""
    from adapters.sql.database import Database
    from adapters.sql.vault import SqlKeyVault
    from tiphub.keys import KeyStore

    settings = settings_from(home=home)
    vault = SqlKeyVault(Database(settings.vault_database), KeyStore(settings.home).vault_keks)
    rewrapped, total = vault.rewrap()
    left = vault.wrapped_with_previous()
    out.print(f"re-wrapped {rewrapped} of {total} data key(s); {left} still wrapped with a previous KEK")


@keys_app.command("retire-vault-kek")
def keys_retire_vault_kek(kek_id: str, home: HomeOpt = None, broker: BrokerOpt = None) -> None:
    """Delete a previous vault KEK once no data key needs it. Vault backups wrapped with it become unreadable."""
    from adapters.sql.database import Database
    from adapters.sql.vault import SqlKeyVault
    from tiphub.keys import KeyStore

    settings = settings_from(home=home)
    store = KeyStore(settings.home)
    left = SqlKeyVault(Database(settings.vault_database), store.vault_keks).wrapped_with_previous()
    if left:
        console.print(f"[red]{left} data key(s) are still wrapped with a previous KEK: run rewrap-vault first[/red]")
        raise typer.Exit(1)
    if not store.retire_vault_kek(kek_id):
        console.print(f"[red]no previous vault KEK {kek_id}[/red]")
        raise typer.Exit(1)
    out.print(f"retired {kek_id}")


@keys_app.command("rotate-linkage")
def keys_rotate_linkage(home: HomeOpt = None, broker: BrokerOpt = None) -> None:
    """A new linkage key version. Until the earlier ones are retired, new reports carry both (bridged)."""
    from tiphub.keys import KeyStore

    settings = settings_from(home=home)
    store = KeyStore(settings.home)
    version = store.rotate_linkage_key()
    earlier = ", ".join(f"v{v}" for v in sorted(store.linkage_keys()) if v != version)
    out.print(
        f"linkage key v{version} is current from the next batch (within {settings.key_reload_s:.0f} s); "
        f"{earlier} still bridge old and new reports until retired (retire-linkage)"
    )


@keys_app.command("retire-linkage")
def keys_retire_linkage(
    version: int,
    force: Annotated[
        bool, typer.Option("--force", help="Retire even if readable reports carry no other live version.")
    ] = False,
    home: HomeOpt = None,
    broker: BrokerOpt = None,
    topic_prefix: PrefixOpt = None,
) -> None:
    """Delete an earlier linkage key version, after checking which reports would lose direct linkage."""
    from adapters.sql.database import Database
    from adapters.sql.vault import SqlKeyVault
    from domain.linkage import stranded_by_retiring
    from streams.feeds import read_decoded
    from tiphub.keys import KeyStore
    from tiphub.runtime import resolve_broker, topics_for

    settings = settings_from(broker, home, topic_prefix)
    store = KeyStore(settings.home)
    live = store.linkage_keys()
    if version not in live:
        console.print(f"[red]no live linkage key v{version}[/red]")
        raise typer.Exit(1)
    if version == max(live):
        console.print(f"[red]linkage key v{version} is the current one: rotate-linkage first[/red]")
        raise typer.Exit(1)
    if not force:
        topics = topics_for(settings)
        accepted = asyncio.run(
            read_decoded(
                resolve_broker(settings),
                topics.accepted,
                settings.partitions,
                settings.kafka_options(),
                expect="tiphub.AcceptedReport",
            )
        )
        vault = SqlKeyVault(Database(settings.vault_database), store.vault_keks)
        stranded = stranded_by_retiring(accepted, version, live, lambda key_id: vault.get(key_id) is not None)
        if stranded:
            console.print(
                f"[red]{len(stranded)} readable report(s) carry linkage key v{version} only: after retiring it, "
                "new reports link with them only through a report bridged during the overlap. Keep the "
                "overlap until retention expires them, or give --force (e.g. the key is compromised).[/red]"
            )
            raise typer.Exit(1)
    store.retire_linkage_key(version)
    out.print(f"retired linkage key v{version}; workers stop deriving it within {settings.key_reload_s:.0f} s")


# -- policy ---------------------------------------------------------------------------------
AgreementsOpt = Annotated[
    Path | None, typer.Option("--agreements", exists=True, file_okay=False, help="Agreements directory.")
]


@policy_app.command("check")
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


@policy_app.command("explain")
def policy_explain(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="One report in its JSON form.")],
    to: Annotated[str, typer.Option("--to", help="Recipient code, e.g. HSU-TH.")],
    at: Annotated[str | None, typer.Option("--at", help="Event time (RFC 3339); default now.")] = None,
    agreements: AgreementsOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Print what a recipient would receive of a report, field by field, and why."""
    from datetime import UTC, datetime

    from policies.engine import decide
    from policies.explain import explain, item_from_report
    from policies.loader import AGREEMENTS_DIR, AgreementError, load_directory
    from policies.model import AgreementSet, LoadedAgreement
    from schemas.convert import ReportValidationError, parse_timestamp, report_from_json

    try:
        record = report_from_json(json.loads(file.read_text()))
        moment = parse_timestamp(at) if at else datetime.now(UTC)
        loaded = load_directory(agreements or AGREEMENTS_DIR)
    except (ReportValidationError, AgreementError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    # Explaining applies the agreements as they stand now, as if loaded before the event time.
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    agreement_set = AgreementSet([LoadedAgreement(a, epoch) for a in loaded])
    decision = decide(item_from_report(record, moment), to, agreement_set, moment)
    out.print(explain(decision, agreement_set), highlight=False, soft_wrap=True)


# -- erasure and audit -----------------------------------------------------------------------
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit.")
app.add_typer(audit_app, name="audit")


@app.command()
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
    from adapters.sql.database import Database
    from adapters.sql.vault import SqlKeyVault
    from domain.linkage import Linker
    from domain.linking import LINKS, Link
    from streams.erasure import ErasureRequestError, erase_keys, erasure_tokens, linked_subject_keys, reapply_erasures
    from streams.feeds import read_decoded
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


retention_app = typer.Typer(no_args_is_help=True, help="Retention of what the hub can read.")
app.add_typer(retention_app, name="retention")


@retention_app.command("sweep")
def retention_sweep(
    now: Annotated[str | None, typer.Option("--now", help="Sweep as of this time (RFC 3339); default now.")] = None,
    broker: BrokerOpt = None,
    home: HomeOpt = None,
    topic_prefix: PrefixOpt = None,
) -> None:
    """Crypto-shred the keys of every report past its retention period (policies/retention.yaml)."""
    from datetime import UTC, datetime

    import yaml

    from adapters.sql.database import Database
    from adapters.sql.vault import SqlKeyVault
    from policies.loader import AGREEMENTS_DIR
    from schemas.convert import parse_timestamp
    from streams.erasure import erase_keys, expired_key_ids
    from streams.feeds import read_decoded
    from tiphub.keys import KeyStore
    from tiphub.runtime import resolve_broker, topics_for

    settings = settings_from(broker, home, topic_prefix)
    bootstrap = resolve_broker(settings)
    topics = topics_for(settings)
    policy = yaml.safe_load((AGREEMENTS_DIR.parent / "retention.yaml").read_text())

    def decoded(topic: str) -> list[dict[str, Any]]:
        return asyncio.run(read_decoded(bootstrap, topic, settings.partitions, settings.kafka_options()))

    erased = {fact["subject_key_id"] for fact in decoded(topics.erasures)}
    expired = expired_key_ids(
        decoded(topics.accepted), policy, parse_timestamp(now) if now else datetime.now(UTC), erased
    )
    vault = SqlKeyVault(Database(settings.vault_database), KeyStore(settings.home).vault_keks)
    result = asyncio.run(
        erase_keys(
            bootstrap,
            topics,
            vault,
            expired,
            reason="retention period ended",
            requested_by="retention-sweep",
            client_options=settings.kafka_options(),
        )
    )
    out.print(f"retention sweep: {len(result.subject_key_ids)} key(s) past retention, {result.keys_deleted} destroyed")


@app.command("eval")
def evaluate(
    truth: Annotated[
        Path, typer.Option("--truth", exists=True, dir_okay=False, help="From `tiphub simulate --truth`.")
    ],
    broker: BrokerOpt = None,
    home: HomeOpt = None,
    topic_prefix: PrefixOpt = None,
) -> None:
    """Score the signals on tip.signals against a simulation's truth: precision, recall, F1 per requirement."""
    from domain.correlate import evaluate_against_truth
    from domain.scoped import HUB_SCOPE
    from streams.agents.correlate_signals import signal_from_record
    from streams.feeds import read_decoded
    from tiphub.runtime import resolve_broker, topics_for

    settings = settings_from(broker, home, topic_prefix)
    bootstrap = resolve_broker(settings)
    records = asyncio.run(
        read_decoded(
            bootstrap,
            topics_for(settings).signals,
            settings.partitions,
            settings.kafka_options(),
            expect="tiphub.Signal",
        )
    )
    latest: dict[str, tuple[int, Any]] = {}
    hub_scope = [r for r in records if r.get("scope", HUB_SCOPE) == HUB_SCOPE]  # every report; the others are subsets
    for version, signal in map(signal_from_record, hub_scope):
        if version > latest.get(signal.signal_id, (0, None))[0]:
            latest[signal.signal_id] = (version, signal)
    scores = evaluate_against_truth([s for _, s in latest.values()], json.loads(truth.read_text())["requirements"])
    table = Table("requirement", "signals", "true sets", "matched", "precision", "recall", "F1")
    for requirement, row in scores.items():
        table.add_row(
            requirement,
            str(row["signals"]),
            str(row["truth"]),
            str(row["matched"]),
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
        )
    out.print(table)
    out.print(json.dumps(scores))


@audit_app.command("verify")
def audit_verify(broker: BrokerOpt = None, home: HomeOpt = None, topic_prefix: PrefixOpt = None) -> None:
    """Walk every audit chain, check it against the latest signed anchor, name the first broken link,
    and list records the chaining stage did not write (foreign) and entries no checkpoint covers."""
    from adapters.sql.anchors import AnchorStore
    from adapters.sql.database import Database
    from streams.audit_verify import verify_records
    from streams.feeds import read_partitions
    from tiphub.keys import KeyStore
    from tiphub.runtime import resolve_broker, topics_for

    settings = settings_from(broker, home, topic_prefix)
    bootstrap = resolve_broker(settings)
    topics = topics_for(settings)
    keys = KeyStore(settings.home)
    anchors = AnchorStore(Database(settings.audit_anchor_database)).all(topics.audit)  # before the topic
    raw = asyncio.run(read_partitions(bootstrap, topics.audit, settings.partitions, settings.kafka_options()))
    report = verify_records(topics.audit, raw, anchors, keys.hub_signing_key().public_key(), keys.audit_mac_key())
    table = Table("partition", "entries", "checkpoints", "last seq", "anchor seq", "foreign", "unanchored", "result")
    for p in report.partitions:
        table.add_row(
            str(p.partition),
            str(p.entries),
            str(p.checkpoints),
            str(p.last_seq),
            "-" if p.anchor_seq is None else str(p.anchor_seq),
            str(len(p.foreign)),
            str(len(p.unanchored)),
            "ok" if p.ok else f"BROKEN: {p.problem}",
        )
    out.print(table)
    if not report.ok:
        raise typer.Exit(2)
    legacy = sum(p.legacy_entries for p in report.partitions)
    out.print(
        f"audit verified: {sum(p.entries for p in report.partitions)} entries in {len(report.partitions)} chains"
        + (f" ({legacy} from before entry MACs, vouched for by signed checkpoints)" if legacy else "")
    )


# -- broker ---------------------------------------------------------------------------------
@broker_app.command("start")
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
    from tiphub.embedded import BrokerError
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


@broker_app.command("stop")
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


# -- simulate / publish ---------------------------------------------------------------------
@app.command()
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


@app.command()
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


# -- worker / gateway / up ------------------------------------------------------------------
@app.command()
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
    from streams.worker import run_worker
    from tiphub.runtime import resolve_broker

    _logging()
    settings = settings_from(broker, home, topic_prefix, instance_id=instance_id)
    asyncio.run(run_worker(settings, resolve_broker(settings)))


@app.command()
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

    _logging()
    settings = settings_from(broker, home, topic_prefix)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


@app.command()
def rebuild(
    view: Annotated[str, typer.Argument(help="decisions or signals")],
    drop: Annotated[bool, typer.Option("--drop", help="Delete the rebuilt topics after comparing.")] = False,
    broker: BrokerOpt = None,
    home: HomeOpt = None,
    topic_prefix: PrefixOpt = None,
) -> None:
    """Recompute a derived view from its source topics, from scratch and honouring every erasure, beside
    the live one (under a new topic prefix), and compare the two; prints one JSON object."""
    from tiphub.rebuild import VIEWS
    from tiphub.rebuild import rebuild as run_rebuild
    from tiphub.runtime import resolve_broker

    if view not in VIEWS:
        console.print(f"[red]no view {view!r}: choose one of {', '.join(sorted(VIEWS))}[/red]")
        raise typer.Exit(2)
    _logging()
    logging.getLogger().setLevel(logging.WARNING)
    settings = settings_from(broker, home, topic_prefix)
    result = run_rebuild(view, settings, resolve_broker(settings), drop=drop)
    print(json.dumps(result))


@app.command()
def bench(
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
    The result names the broker it ran on."""
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
    text = dumps(result)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
    out.print_json(text) if out.is_terminal else print(text)


@app.command()
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
