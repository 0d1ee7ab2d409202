"""Erasure by crypto-shredding: record the fact, destroy the keys, audit it.

The fact goes first: if the process dies after it, running the command again finishes the job
(facts are idempotent: processors keep a set). Once the keys are gone, every sealed copy of the
person's data, on every topic and in every backup of the topics, is unreadable.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from producers.publisher import new_producer
from schemas.codec import WireCodec
from schemas.normalise import IDENTIFIER_KINDS, IdentifierError, normalise_identifier
from streams.accept import report_id_of_key, subject_token
from streams.audit_events import AUDIT_EVENT, audit_event
from streams.topics import Topics
from tiphub.linkage import Linker
from tiphub.vault import KeyVault

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
            canonical = normalise_identifier(kind, value, issuer or None, None)
        except IdentifierError as exc:
            raise ErasureRequestError(f"--identifier: {exc}") from None
        return [linker.token(kind, canonical) for linker in linkers]
    if name and dob:
        return [subject_token(linker, name, dob) for linker in linkers]
    raise ErasureRequestError("give --identifier KIND:VALUE[:ISSUER], or both --name and --dob")


def linked_subject_keys(
    accepted: list[dict[str, Any]],
    entities: list[dict[str, Any]],
    key_ids: list[str],
    retracted: Collection[str] = (),
) -> list[str]:
    """Subject keys of the other records the hub's own correlation links to the people of `key_ids` (their
    entity's members, spelled differently or recorded without the identifier the request named). From the
    accepted reports and the EntityMerged facts of tip.entities, the latest fact of an occurrence deciding
    its entity. A retracted report links nobody: the hub dropped it and every link it made (its own records
    of the person are named by the request, if they name them). Pure."""
    occurrence_of: dict[str, str] = {}
    key_of: dict[str, str] = {}
    for report in accepted:
        if report["report_id"] in retracted:
            continue
        for i, subject in enumerate(report["subjects"]):
            occurrence = f"{report['report_id']}#{i}"
            occurrence_of[subject["subject_key_id"]] = occurrence
            key_of[occurrence] = subject["subject_key_id"]
    latest: dict[str, tuple[Any, frozenset[str]]] = {}  # occurrence -> (at, the members then)
    for fact in entities:
        members = frozenset(fact["members"])
        for occurrence in members:
            held = latest.get(occurrence)
            if held is None or fact["at"] >= held[0]:
                latest[occurrence] = (fact["at"], members)
    named = {occurrence_of[k] for k in key_ids if k in occurrence_of}
    linked = {m for occurrence in named for m in latest.get(occurrence, (None, frozenset()))[1]} - named
    return sorted(key_of[m] for m in linked if m in key_of and key_of[m] not in key_ids)


@dataclass(frozen=True)
class ErasureResult:
    subject_key_ids: list[str]
    keys_deleted: int


async def erase_subject(
    bootstrap: str,
    topics: Topics,
    vault: KeyVault,
    tokens: str | list[str],
    *,
    reason: str,
    requested_by: str,
    client_options: dict[str, object] | None = None,
) -> ErasureResult:
    """Erase everyone indexed under any of `tokens` (linkage tokens of the person, any key version)."""
    wanted = [tokens] if isinstance(tokens, str) else tokens
    return await erase_keys(
        bootstrap,
        topics,
        vault,
        sorted({key_id for token in wanted for key_id in vault.key_ids_for_token(token)}),
        reason=reason,
        requested_by=requested_by,
        client_options=client_options,
    )


async def erase_keys(
    bootstrap: str,
    topics: Topics,
    vault: KeyVault,
    key_ids: list[str],
    *,
    reason: str,
    requested_by: str,
    client_options: dict[str, object] | None = None,
) -> ErasureResult:
    if not key_ids:
        return ErasureResult([], 0)
    # What depends on them goes too (the reports' own keys, triage notes): each gets its fact, so every
    # view shows [erased] where it was.
    key_ids = sorted({*key_ids, *vault.dependents(key_ids)})
    codec = WireCodec()
    now = datetime.now(UTC)
    producer = new_producer(bootstrap, dict(client_options or {}))
    await producer.start()
    try:
        for key_id in key_ids:
            fact = {
                "subject_key_id": key_id,
                "report_id": report_id_of_key(key_id),
                "tokens": vault.tokens_for_key(key_id),
                "erased_at": now,
                "reason": reason,
                "requested_by": requested_by,
            }
            await producer.send_and_wait(topics.erasures, key=key_id.encode(), value=codec.encode(ERASED_FACT, fact))
        deleted = vault.delete(key_ids)
        event = audit_event(
            "erasure",
            requested_by,
            "erased",
            subject_refs=key_ids,
            detail={"reason": reason, "keys_deleted": deleted},
            at=now,
        )
        await producer.send_and_wait(
            topics.audit_intake, key=event["event_id"].encode(), value=codec.encode(AUDIT_EVENT, event)
        )
    finally:
        await producer.stop()
    return ErasureResult(key_ids, deleted)


def retention_days(indicator_type: str, policy: dict[str, object]) -> int:
    by_type = policy.get("indicator_types") or {}
    assert isinstance(by_type, dict)
    return int(by_type.get(indicator_type, policy["default_days"]))  # type: ignore[arg-type]


def expired_key_ids(
    accepted: list[dict[str, object]], policy: dict[str, object], now: datetime, already_erased: set[str]
) -> list[str]:
    """Every key of every report past its retention that is not erased yet (pure)."""
    from datetime import timedelta

    found: list[str] = []
    for report in accepted:
        observed = report["observed_at"]
        assert isinstance(observed, datetime)
        if observed + timedelta(days=retention_days(str(report["indicator_type"]), policy)) < now:
            subjects = report["subjects"]
            assert isinstance(subjects, list)
            keys = [s["subject_key_id"] for s in subjects] + [str(report["report_key_id"])]
            found += [k for k in keys if k not in already_erased]
    return found


async def reapply_erasures(
    bootstrap: str,
    topics: Topics,
    vault: KeyVault,
    *,
    requested_by: str,
    client_options: dict[str, object] | None = None,
) -> tuple[int, int]:
    """After a vault restore: destroy again every key an erasure fact on the topic names.

    A backup taken before an erasure still holds the erased person's keys; restoring it would bring
    them back. `tip.erasures` keeps every fact forever, so walking it undoes that. Idempotent.
    Returns (keys named by facts, keys destroyed now).
    """
    from streams.feeds import read_decoded

    facts = await read_decoded(bootstrap, topics.erasures, topics.partitions, dict(client_options or {}))
    key_ids = sorted({fact["subject_key_id"] for fact in facts if "subject_key_id" in fact})
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
        producer = new_producer(bootstrap, dict(client_options or {}))
        await producer.start()
        try:
            await producer.send_and_wait(
                topics.audit_intake, key=event["event_id"].encode(), value=codec.encode(AUDIT_EVENT, event)
            )
        finally:
            await producer.stop()
    return len(key_ids), deleted
