"""What correlation knows of an accepted report: its non-sensitive facts and, per person in it, the
keyed linkage material (tokens, Bloom encodings, blocking keys) of every live key version; and the
level-1 match between two such occurrences."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from schemas.normalise import CONTACT_KINDS, DOCUMENT_KINDS

STRONG_DOB_DICE = 0.70
WEAK_DICE = 0.80
NEAR_DOB_DICE = 0.80  # a near full DOB asks what a partial one asks of the names
CONFLICT_DICE = 0.60


def dice(a: bytes, b: bytes) -> float:
    both = int.from_bytes(a, "big") & int.from_bytes(b, "big")
    total = int.from_bytes(a, "big").bit_count() + int.from_bytes(b, "big").bit_count()
    return 2 * both.bit_count() / total if total else 0.0


Rule = Literal["share", "generalise", "drop"]  # what a sharing decision does with one field


@dataclass(frozen=True)
class PersonOccurrence:
    occ_id: str
    report_id: str
    role: str
    minor: bool | None
    subject_key_id: str
    documents: tuple[str, ...]
    contacts: tuple[str, ...]
    clk: bytes | None
    dob_key: str | None
    ny_keys: tuple[str, ...]
    # The same fuzzy material derived with earlier, still live linkage keys (a rotation's overlap):
    # (clk, dob_key, ny_keys) per earlier version. Keys of different versions never share a value.
    bridges: tuple[tuple[bytes | None, str | None, tuple[str, ...]], ...] = ()
    # Where the material comes from, so a scope can use only what its caller may see (domain/scoped.py):
    # per identifier (kind, its tokens of every key version), and whether a name and a birth date were given.
    identifiers: tuple[tuple[str, tuple[str, ...]], ...] = ()
    named: bool = False
    dated: bool = False

    def variants(self) -> list[PersonOccurrence]:
        """This occurrence once per linkage key version it carries, the current one first."""
        return [self] + [
            PersonOccurrence(self.occ_id, self.report_id, self.role, self.minor, self.subject_key_id, (), (), *bridge)
            for bridge in self.bridges
        ]


def strong_match_any(a: PersonOccurrence, b: PersonOccurrence) -> bool:
    """A strong match under any linkage key version both carry."""
    return any(strong_match(x, y) for x in a.variants() for y in b.variants())


def near_keys(occ: PersonOccurrence) -> set[str]:
    """The `nd:` keys among an occurrence's name keys: its whole folded name with its date's neighbours."""
    return {k for k in occ.ny_keys if k.startswith("nd:")}


def strong_match(a: PersonOccurrence, b: PersonOccurrence) -> bool:
    """Level-1 fuzzy match: equal keyed full DOBs and Dice >= 0.70; or, when a DOB is partial, a shared
    name+year key and Dice >= 0.80."""
    if a.clk is None or b.clk is None:
        return False
    if a.dob_key and b.dob_key:
        return a.dob_key == b.dob_key and dice(a.clk, b.clk) >= STRONG_DOB_DICE
    return bool(set(a.ny_keys) & set(b.ny_keys)) and dice(a.clk, b.clk) >= WEAK_DICE


def near_match(a: PersonOccurrence, b: PersonOccurrence) -> bool:
    """Full DOBs one typing error or a day/month swap apart under one folded name (a shared `nd:` key) and
    Dice >= 0.80. Weaker than a level-1 match: namesakes are born a digit apart too, so it joins two
    people only where it is the one reading (the correlator's level 2, docs/correlation.md)."""
    if a.clk is None or b.clk is None or not a.dob_key or not b.dob_key or a.dob_key == b.dob_key:
        return False
    return bool(near_keys(a) & near_keys(b)) and dice(a.clk, b.clk) >= NEAR_DOB_DICE


def near_match_any(a: PersonOccurrence, b: PersonOccurrence) -> bool:
    """A near match under any linkage key version both carry."""
    return any(near_match(x, y) for x in a.variants() for y in b.variants())


@dataclass(frozen=True)
class ReportFacts:
    report_id: str
    agency: str
    observed_at: datetime
    accepted_at: datetime
    indicator_type: str
    elements: frozenset[str]
    reliability: str | None
    credibility: str | None
    people: tuple[PersonOccurrence, ...]
    organisations: tuple[str, ...]  # registration tokens
    # Tokens that name one identifier under several linkage key versions (a rotation's overlap),
    # current version first. The correlator names the identifier by one of them throughout.
    aliases: tuple[tuple[str, ...], ...] = ()
    registrations: tuple[tuple[str, ...], ...] = ()  # per organisation: its registration tokens, every version


@dataclass(frozen=True)
class ReportHeader:
    """The non-sensitive facts of an accepted report that a caller is shown about it (signals, summaries):
    what correlation knows of it (`ReportFacts`) is this and the people and organisations in it."""

    report_id: str
    agency: str
    indicator_type: str
    observed_at: datetime
    elements: tuple[str, ...]


def header_of(record: dict[str, Any]) -> ReportHeader:
    """An AcceptedReport's header (elements in the order the agency gave them)."""
    return ReportHeader(
        report_id=record["report_id"],
        agency=record["source_agency"],
        indicator_type=record["indicator_type"],
        observed_at=record["observed_at"],
        elements=tuple(record["elements"]),
    )


def _dob_and_ny(blocking: list[str]) -> tuple[str | None, tuple[str, ...]]:
    """The exact DOB key, and the name keys: `ny:` (name + year) and `nd:` (name + a DOB's neighbours)."""
    return next((k for k in blocking if k.startswith("dob:")), None), tuple(
        k for k in blocking if k.startswith(("ny:", "nd:"))
    )


def facts_from_accepted(record: dict[str, Any]) -> ReportFacts:
    """The facts correlation uses, with every linkage key version the report carries: its own
    (`linkage_key_version`) and the earlier ones it was bridged with (`linkage_bridges`, v3)."""
    bridges = record.get("linkage_bridges") or []
    people = []
    aliases: list[tuple[str, ...]] = []
    for i, subject in enumerate(record["subjects"]):
        idents = subject["identifiers"]
        dob_key, ny_keys = _dob_and_ny(subject.get("blocking_keys") or [])
        bridged = [bridge["subjects"][i] for bridge in bridges]
        token_groups = [
            (ident["kind"], (ident["linkage_token"], *(b["identifier_tokens"][j] for b in bridged)))
            for j, ident in enumerate(idents)
        ]
        aliases += [group for _, group in token_groups if len(group) > 1]
        people.append(
            PersonOccurrence(
                occ_id=f"{record['report_id']}#{i}",
                report_id=record["report_id"],
                role=subject["role"],
                minor=subject.get("minor_at_observation"),
                subject_key_id=subject["subject_key_id"],
                documents=tuple(sorted(t for kind, group in token_groups if kind in DOCUMENT_KINDS for t in group)),
                contacts=tuple(sorted(t for kind, group in token_groups if kind in CONTACT_KINDS for t in group)),
                clk=subject.get("name_dob_encoding"),
                dob_key=dob_key,
                ny_keys=ny_keys,
                bridges=tuple((b["name_dob_encoding"], *_dob_and_ny(b["blocking_keys"])) for b in bridged),
                identifiers=tuple(token_groups),
                named=subject.get("name") is not None,
                dated=subject.get("date_of_birth") is not None,
            )
        )
    organisations: set[str] = set()
    registrations: list[tuple[str, ...]] = []
    for j, org in enumerate(record["organisations"]):
        group = tuple(t for t in (org.get("registration_token"), *(b["registration_tokens"][j] for b in bridges)) if t)
        registrations.append(group)
        organisations.update(group)
        if len(group) > 1:
            aliases.append(group)
    return ReportFacts(
        report_id=record["report_id"],
        agency=record["source_agency"],
        observed_at=record["observed_at"],
        accepted_at=record["accepted_at"],
        indicator_type=record["indicator_type"],
        elements=frozenset(record["elements"]),
        reliability=record.get("source_reliability"),
        credibility=record.get("info_credibility"),
        people=tuple(people),
        organisations=tuple(sorted(organisations)),
        aliases=tuple(aliases),
        registrations=tuple(registrations),
    )


def without(report: ReportFacts, occurrences: set[str]) -> ReportFacts:
    """The report without these occurrences, and without the key-version aliases of identifiers only they had
    (an erasure leaves nothing of the person, not the other versions of their tokens)."""
    people = tuple(p for p in report.people if p.occ_id not in occurrences)
    kept = {t for p in people for t in (*p.documents, *p.contacts)} | set(report.organisations)
    aliases = tuple(group for group in report.aliases if set(group) & kept)
    return replace(report, people=people, aliases=aliases)
