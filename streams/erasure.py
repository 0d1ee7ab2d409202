"""Erasure by crypto-shredding: record the fact, destroy the keys, audit it.

The fact goes first: if the process dies after it, running the command again finishes the job
(facts are idempotent: processors keep a set). Once the keys are gone, every sealed copy of the
person's data, on every topic and in every backup of the topics, is unreadable.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from domain.correlate import Correlator
from domain.facts import facts_from_accepted
from domain.linkage import Linker
from domain.linking import LINKS, Link
from domain.log import TopicIO
from domain.ports import KeyVault
from domain.withdrawals import Withdrawals
from schemas.codec import WireCodec
from schemas.normalise import IDENTIFIER_KINDS, IdentifierError
from streams.accept import report_id_of_key, subject_token
from streams.audit_events import AUDIT_EVENT, audit_event
from streams.topics import Topics

ERASED_FACT = "tiphub.SubjectErased"


class ErasureRequestError(ValueError):
    """An erasure request that names no person the hub could look for; says which option and why."""


def erasure_tokens(
    linkers: tuple[Linker, ...],
    *,
    identifier: str | None = None,
    name: str | None = None,
    dob: str | None = None,
) -> list[str]:
    """The linkage tokens, under every live linkage key version, of the person an erasure request names:
    by one identifier (`KIND:VALUE[:ISSUER]`, e.g. `PASSPORT:N01234567:KH`), or by name and date of birth
    (as reports recorded them). The hub derives them itself: no one outside it holds a token."""
    if identifier is not None:
        kind, sep, rest = identifier.partition(":")
        value, _, issuer = rest.partition(":")
        if kind not in IDENTIFIER_KINDS:
            raise ErasureRequestError(f"--identifier: the kind must be one of {', '.join(sorted(IDENTIFIER_KINDS))}")
        if not sep or not value:
            raise ErasureRequestError("--identifier: give KIND:VALUE[:ISSUER]")
        try:
            # Each live version in its own encoding: the token the reports of that version carry.
            return [linker.identifier_token(kind, value, issuer or None, None) for linker in linkers]
        except IdentifierError as exc:
            raise ErasureRequestError(f"--identifier: {exc}") from None
    if name and dob:
        return [subject_token(linker, name, dob) for linker in linkers]
    raise ErasureRequestError("give --identifier KIND:VALUE[:ISSUER], or both --name and --dob")


def linked_subject_keys(
    accepted: list[dict[str, Any]],
    links: Iterable[Link],
    key_ids: Collection[str],
    retracted: Collection[str] = (),
    erased: Collection[str] = (),
) -> list[str]:
    """Subject keys of the other records the hub's correlation links to the people of `key_ids` (spelled
    differently, or recorded without the identifier the request named), worked out now from the accepted
    reports and the link stage's links as the hub's correlation holds them: retractions and other people's
    erasures applied, the requested people still in (so a run after their erasure finds the same records).

    A retracted report bridges nobody (the hub dropped it and every link it made), but its own record of
    the person, linked to them directly, is theirs and is included. Pure."""
    named, gone, withdrawn = set(key_ids), set(erased) - set(key_ids), set(retracted)
    links = list(links)
    correlator = Correlator([], external_links=True, erased=gone, retracted=withdrawn)
    correlator.add_links(links)
    reports = [facts_from_accepted(record) for record in accepted]
    for report in reports:
        correlator.add(report)
    key_of = {occ.occ_id: occ.subject_key_id for report in reports for occ in report.people}
    theirs = {occ for occ, key in key_of.items() if key in named}
    entities = {correlator.entity_of[occ] for occ in theirs if occ in correlator.entity_of}
    entity = {member for e in entities for member in correlator.entity_members[e]}
    direct = {
        other
        for link in links
        if link.basis != "dob_near"  # a near date alone says two namesakes may be one: no ground to shred a key
        for one, other in ((link.a, link.b), (link.b, link.a))
        if one in entity and other.rpartition("#")[0] in withdrawn
    }
    return sorted({key_of[occ] for occ in entity | direct if occ in key_of} - named - gone)


@dataclass(frozen=True)
class ErasureResult:
    subject_key_ids: list[str]
    keys_deleted: int


async def erase_subject(
    log: TopicIO,
    topics: Topics,
    vault: KeyVault,
    tokens: str | list[str],
    *,
    reason: str,
    requested_by: str,
) -> ErasureResult:
    """Erase everyone indexed under any of `tokens` (linkage tokens of the person, any key version)."""
    wanted = [tokens] if isinstance(tokens, str) else tokens
    return await erase_keys(
        log,
        topics,
        vault,
        sorted({key_id for token in wanted for key_id in vault.key_ids_for_token(token)}),
        reason=reason,
        requested_by=requested_by,
    )


async def erase_keys(
    log: TopicIO,
    topics: Topics,
    vault: KeyVault,
    key_ids: list[str],
    *,
    reason: str,
    requested_by: str,
) -> ErasureResult:
    if not key_ids:
        return ErasureResult([], 0)
    # What depends on them goes too (the reports' own keys, triage notes): each gets its fact, so every
    # view shows [erased] where it was.
    key_ids = sorted({*key_ids, *vault.dependents(key_ids)})
    codec = WireCodec()
    now = datetime.now(UTC)
    async with log.writing() as out:
        for key_id in key_ids:
            fact = {
                "subject_key_id": key_id,
                "report_id": report_id_of_key(key_id),
                "tokens": vault.tokens_for_key(key_id),
                "erased_at": now,
                "reason": reason,
                "requested_by": requested_by,
            }
            await out.send(topics.erasures, key_id.encode(), codec.encode(ERASED_FACT, fact))
        deleted = vault.delete(key_ids)
        event = audit_event(
            "erasure",
            requested_by,
            "erased",
            subject_refs=key_ids,
            detail={"reason": reason, "keys_deleted": deleted},
            at=now,
        )
        await out.send(topics.audit_intake, event["event_id"].encode(), codec.encode(AUDIT_EVENT, event))
    return ErasureResult(key_ids, deleted)


class NoSuchPerson(LookupError):
    """No accepted report names the person an erasure request names (and no erasure fact does)."""


def keys_named(tokens: Collection[str], vault: KeyVault, erased: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Subject keys of the person the request names: in the vault under any of `tokens`, or erased before
    under one of them (`erased`: erasure facts by subject key), so that a second run (with --follow-links,
    after a review) still knows whom the request names."""
    wanted = set(tokens)
    return sorted(
        {key_id for token in tokens for key_id in vault.key_ids_for_token(token)}
        | {key_id for key_id, fact in erased.items() if wanted & set(fact["tokens"])}
    )


def keys_to_erase(
    named: list[str], linked: list[str], erased: Collection[str], *, follow_links: bool
) -> tuple[list[str], list[str]]:
    """(keys to erase now, linked keys left for review): the person's own keys, and the ones correlation
    links to them only when asked to follow links; a key erased before is neither erased again nor left."""
    reached = named + (linked if follow_links else [])
    left = [] if follow_links else [k for k in linked if k not in erased]
    return [k for k in reached if k not in erased], left


@dataclass(frozen=True)
class PersonErased:
    erased: ErasureResult
    linked_left: list[str]  # records correlation links to the person, not erased: for a review, then --follow-links


async def erase_person(
    log: TopicIO,
    topics: Topics,
    vault: KeyVault,
    tokens: list[str],
    *,
    follow_links: bool,
    reason: str,
    requested_by: str,
    working: Callable[[str], AbstractContextManager[object]] = lambda _: nullcontext(),
) -> PersonErased:
    """Erase the person `tokens` name (their linkage tokens, any key version), and with `follow_links` the
    records the hub's correlation links to them (another spelling, no identifier). Raises NoSuchPerson.

    `working(what)` is entered around the long part (reading the accepted reports and the links)."""
    facts = await log.read_decoded(topics.erasures, topics.partitions)
    erased = Withdrawals().fold_all(facts, "erased").erased
    named = keys_named(tokens, vault, erased)
    if not named:
        raise NoSuchPerson
    with working("working out whom the hub's correlation links to them"):
        retractions = await log.read_decoded(topics.retractions, topics.partitions)
        retracted = Withdrawals().fold_all(retractions, "retracted").retracted.keys()
        batches = await log.read_decoded(topics.links, topics.partitions_of(topics.links), expect=LINKS)
        links = [Link(**link) for batch in batches for link in batch["links"]]
        accepted = await log.read_decoded(topics.accepted, topics.partitions)
        linked = linked_subject_keys(accepted, links, named, retracted, erased)
    to_erase, left = keys_to_erase(named, linked, erased, follow_links=follow_links)
    result = await erase_keys(log, topics, vault, to_erase, reason=reason, requested_by=requested_by)
    return PersonErased(result, left)


async def reapply_erasures(
    log: TopicIO,
    topics: Topics,
    vault: KeyVault,
    *,
    requested_by: str,
) -> tuple[int, int]:
    """After a vault restore: destroy again every key an erasure fact on the topic names.

    A backup taken before an erasure still holds the erased person's keys; restoring it would bring
    them back. `tip.erasures` keeps every fact forever, so walking it undoes that. Idempotent.
    Returns (keys named by facts, keys destroyed now).
    """
    facts = await log.read_decoded(topics.erasures, topics.partitions)
    key_ids = sorted(Withdrawals().fold_all(facts, "erased").erased)
    deleted = vault.delete(key_ids)
    if deleted:
        codec = WireCodec()
        event = audit_event(
            "erasure",
            requested_by,
            "reapplied",
            subject_refs=key_ids,
            detail={"reason": "erasures re-applied after a vault restore", "keys_deleted": deleted},
        )
        async with log.writing() as out:
            await out.send(topics.audit_intake, event["event_id"].encode(), codec.encode(AUDIT_EVENT, event))
    return len(key_ids), deleted
