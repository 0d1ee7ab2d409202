"""decide(item, recipient, agreements, at) -> Decision. Pure: no clock, no I/O, no randomness.

Order of the rules (the first that refuses decides):
1. the originating agency always sees its own report;
2. no recipient agreement in force at `at`: nothing is shared;
3. TLP RED never leaves the originating agency;
4. the agreement's TLP ceiling, indicator types and purposes;
5. abroad, originator control: the contributing agency's own agreement must name the partner;
6. field by field, the agreement's allow-list (a field it does not name is dropped), then the
   hard rules that no agreement can relax: abroad, victims' identities and any identifier or
   name of a minor never leave the country, and free text about them stays home too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from policies.model import FIELDS, SENSITIVE_FIELDS, TLP_ORDER, Agreement, AgreementSet, Rule

ERASED = "[erased]"
HARD_VICTIM = "hard rule: victims' identities never leave the country (NZ Plan of Action; ACTIP)"
HARD_MINOR = "hard rule: no identifier or name of a minor leaves the country"
HARD_FREE_TEXT = "hard rule: free text about a victim or a minor stays in the country"
NOT_LISTED = "not in the agreement's allow-list"
ERASED_BASIS = "the subject was erased (crypto-shredded)"


@dataclass(frozen=True)
class FieldDecision:
    path: str  # concrete path in the item, e.g. subjects[0].name
    field: str  # the agreement's field key, e.g. subjects.name
    rule: Rule
    basis: str  # the clause, or the hard rule, that decided it
    agreement_hash: str | None


@dataclass(frozen=True)
class Decision:
    recipient: str
    item_id: str
    at: datetime
    allowed: bool
    reason: str
    explanation: str
    agreement: str | None
    agreement_hash: str | None
    originator_agreement: str | None
    originator_agreement_hash: str | None
    view: Mapping[str, Any] | None
    fields: tuple[FieldDecision, ...]
    retain_until: datetime | None = None

    @cached_property  # read for the decision record and again for its audit event
    def decision_id(self) -> str:
        """The same item, recipient and agreements always give the same id: replays are idempotent."""
        body = json.dumps(
            [
                self.item_id,
                self.recipient,
                self.allowed,
                self.reason,
                self.agreement_hash,
                self.originator_agreement_hash,
                self.view,
            ],
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        return hashlib.sha256(body.encode()).hexdigest()[:32]


def _deny(
    item: Mapping[str, Any],
    recipient: str,
    at: datetime,
    reason: str,
    explanation: str,
    agreement: Agreement | None = None,
    originator: Any = None,
) -> Decision:
    return Decision(
        recipient,
        item["report_id"],
        at,
        False,
        reason,
        explanation,
        agreement.label if agreement else None,
        agreement.hash if agreement else None,
        originator.label if originator else None,
        originator.hash if originator else None,
        None,
        (),
    )


def tlp_rank(tlp: str) -> int:
    return TLP_ORDER.index(tlp)


class _ViewBuilder:
    def __init__(
        self, item: Mapping[str, Any], agreement: Agreement | None, foreign: bool, erased: frozenset[str]
    ) -> None:
        self.item = item
        self.agreement = agreement  # None: the originator's own view, everything shared
        self.foreign = foreign
        self.erased = erased
        self.fields: list[FieldDecision] = []
        self.protected_people = any(
            s["role"] == "SUSPECTED_VICTIM" or s.get("minor_at_observation") for s in item.get("subjects") or []
        )

    def rule(self, field: str, path: str, hard: str | None = None, cap: Rule | None = None) -> Rule:
        """The rule for one concrete field: the agreement's, then any hard rule on top."""
        if self.agreement is None:
            rule, basis, digest = "share", "originator: the agency's own report", None
        else:
            listed = self.agreement.fields.get(field)
            digest = self.agreement.hash
            if listed is None:
                rule, basis = "drop", NOT_LISTED
            else:
                rule, basis = listed.rule, f"{self.agreement.label}, {listed.clause}"
        if hard is not None and rule != "drop":
            if cap == "generalise" and rule == "share" and "generalise" in FIELDS[field][0]:
                rule, basis = "generalise", hard
            elif cap != "generalise":
                rule, basis = "drop", hard
        self.fields.append(FieldDecision(path, field, rule, basis, digest))  # type: ignore[arg-type]
        return rule  # type: ignore[return-value]

    def put(
        self,
        out: dict[str, Any],
        key: str,
        field: str,
        path: str,
        value: Any,
        *,
        general: Any = None,
        sealed_key: str | None = None,
        hard: str | None = None,
        cap: Rule | None = None,
    ) -> None:
        if value is None:
            return
        rule = self.rule(field, path, hard, cap)
        if rule == "drop":
            return
        if sealed_key is not None and sealed_key in self.erased and field in SENSITIVE_FIELDS:
            # Shown only where something would have been shared: a dropped field stays silent.
            self.fields[-1] = FieldDecision(path, field, "drop", ERASED_BASIS, self.fields[-1].agreement_hash)
            out[key] = ERASED
        elif rule == "share":
            out[key] = {"ref": path, "key_id": sealed_key} if field in SENSITIVE_FIELDS else value
        elif general is not None:
            out[key] = general

    def build(self) -> dict[str, Any]:
        item = self.item
        view: dict[str, Any] = {}
        for key in ("indicator_type", "tlp", "purpose", "legal_basis", "source_reliability", "info_credibility"):
            self.put(view, key, key, key, item.get(key))
        observed: datetime = item["observed_at"]
        self.put(
            view,
            "observed_at",
            "observed_at",
            "observed_at",
            observed.isoformat().replace("+00:00", "Z"),
            general=observed.strftime("%Y-%m"),
        )
        self.put(
            view,
            "source_agency",
            "source_agency",
            "source_agency",
            item["source_agency"],
            general=item["source_agency"].split("-", 1)[0],
        )
        self.put(view, "elements", "elements", "elements", list(item.get("elements") or []) or None)
        subjects = []
        for i, subject in enumerate(item.get("subjects") or []):
            base = f"subjects[{i}]"
            key_id = subject["subject_key_id"]
            victim = subject["role"] == "SUSPECTED_VICTIM"
            minor = bool(subject.get("minor_at_observation"))
            identity_rule = (HARD_MINOR if minor else HARD_VICTIM) if self.foreign and (victim or minor) else None
            out: dict[str, Any] = {}
            self.put(out, "role", "subjects.role", f"{base}.role", subject["role"])
            self.put(
                out, "name", "subjects.name", f"{base}.name", subject.get("name"), sealed_key=key_id, hard=identity_rule
            )
            self.put(
                out,
                "date_of_birth",
                "subjects.date_of_birth",
                f"{base}.date_of_birth",
                subject.get("date_of_birth"),
                general=subject.get("age_band"),
                sealed_key=key_id,
                hard=identity_rule,
                cap="generalise",
            )
            self.put(out, "sex", "subjects.sex", f"{base}.sex", subject.get("sex"))
            self.put(out, "nationality", "subjects.nationality", f"{base}.nationality", subject.get("nationality"))
            self.put(out, "minor", "subjects.minor", f"{base}.minor", subject.get("minor_at_observation"))
            identifiers = []
            for j, ident in enumerate(subject.get("identifiers") or []):
                ipath = f"{base}.identifiers[{j}]"
                entry: dict[str, Any] = {}
                self.put(entry, "kind", "subjects.identifiers.kind", f"{ipath}.kind", ident["kind"], hard=identity_rule)
                self.put(
                    entry,
                    "issuer",
                    "subjects.identifiers.issuer",
                    f"{ipath}.issuer",
                    ident.get("issuer"),
                    hard=identity_rule,
                )
                self.put(
                    entry,
                    "value",
                    "subjects.identifiers.value",
                    f"{ipath}.value",
                    ident["value"],
                    sealed_key=key_id,
                    hard=identity_rule,
                )
                if entry:
                    identifiers.append(entry)
            if identifiers:
                out["identifiers"] = identifiers
            if out:
                subjects.append(out)
        if subjects:
            view["subjects"] = subjects
        report_key = item.get("report_key_id")
        organisations = []
        for i, org in enumerate(item.get("organisations") or []):
            base = f"organisations[{i}]"
            out = {}
            self.put(out, "role", "organisations.role", f"{base}.role", org["role"])
            self.put(out, "name", "organisations.name", f"{base}.name", org.get("name"))
            self.put(
                out,
                "registration",
                "organisations.registration",
                f"{base}.registration",
                org.get("registration"),
                sealed_key=report_key,
            )
            self.put(out, "country", "organisations.country", f"{base}.country", org.get("country"))
            if out:
                organisations.append(out)
        if organisations:
            view["organisations"] = organisations
        locations = []
        for i, loc in enumerate(item.get("locations") or []):
            out = {}
            self.put(out, "country", "locations.country", f"locations[{i}].country", loc.get("country"))
            self.put(
                out, "place", "locations.place", f"locations[{i}].place", loc.get("place"), general=loc.get("country")
            )
            if out:
                locations.append(out)
        if locations:
            view["locations"] = locations
        free_text_rule = HARD_FREE_TEXT if self.foreign and self.protected_people else None
        self.put(
            view,
            "narrative",
            "narrative",
            "narrative",
            item.get("narrative"),
            sealed_key=report_key,
            hard=free_text_rule,
        )
        return view


def decide(
    item: Mapping[str, Any],
    recipient: str,
    agreements: AgreementSet,
    at: datetime,
    erased: frozenset[str] = frozenset(),
) -> Decision:
    """What `recipient` may receive of `item` (an AcceptedReport record) at event time `at`.

    `erased` holds the vault key ids of erased subjects: their sensitive fields show [erased].
    """
    source = item["source_agency"]
    if recipient == source:
        builder = _ViewBuilder(item, None, False, erased)
        view = builder.build()
        return Decision(
            recipient,
            item["report_id"],
            at,
            True,
            "originator",
            "The originating agency always sees its own report.",
            None,
            None,
            None,
            None,
            view,
            tuple(builder.fields),
        )
    agreement = agreements.recipient(recipient, at)
    if agreement is None:
        latest = agreements.latest_recipient(recipient)
        why = (
            f"{latest.label} is not in force on {at.date()} (valid {latest.valid_from} to {latest.valid_until})"
            if latest
            else f"there is no agreement with {recipient}"
        )
        return _deny(item, recipient, at, "no_agreement_in_force", f"Nothing is shared: {why}.")
    tlp = item["tlp"]
    if tlp == "RED":
        return _deny(item, recipient, at, "tlp_red", "TLP:RED never leaves the originating agency.", agreement)
    if tlp_rank(tlp) > tlp_rank(agreement.tlp_ceiling):
        return _deny(
            item,
            recipient,
            at,
            "tlp_above_ceiling",
            f"TLP:{tlp} is above the agreement's ceiling TLP:{agreement.tlp_ceiling}.",
            agreement,
        )
    if agreement.indicator_types is not None and item["indicator_type"] not in agreement.indicator_types:
        return _deny(
            item,
            recipient,
            at,
            "indicator_type_not_covered",
            f"{item['indicator_type']} is not an indicator type the agreement covers.",
            agreement,
        )
    if agreement.purposes is not None and item.get("purpose") not in agreement.purposes:
        return _deny(
            item,
            recipient,
            at,
            "purpose_not_covered",
            f"the report's purpose ({item.get('purpose') or 'not stated'}) is not one the agreement allows.",
            agreement,
        )
    originator = None
    foreign = agreement.kind == "foreign"
    if foreign:
        originator = agreements.originator(source, at)
        if originator is None:
            return _deny(
                item,
                recipient,
                at,
                "no_originator_agreement",
                f"{source} has no originator agreement in force: nothing it contributed goes abroad.",
                agreement,
            )
        if recipient not in originator.foreign_release:
            return _deny(
                item,
                recipient,
                at,
                "originator_withholds",
                f"{source} does not release its reports to {recipient} ({originator.label}).",
                agreement,
                originator,
            )
    builder = _ViewBuilder(item, agreement, foreign, erased)
    view = builder.build()
    return Decision(
        recipient,
        item["report_id"],
        at,
        True,
        "shared",
        f"Shared under {agreement.label}" + (f" with {originator.label}" if originator else "") + ".",
        agreement.label,
        agreement.hash,
        originator.label if originator else None,
        originator.hash if originator else None,
        view,
        tuple(builder.fields),
        retain_until=at + timedelta(days=agreement.retention_days),
    )


def view_field_keys(view: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Each agreement field key present in a view, with its values (for checks and tests)."""
    found: dict[str, list[Any]] = {}

    def add(key: str, value: Any) -> None:
        found.setdefault(key, []).append(value)

    for key, value in view.items():
        if key in ("subjects", "organisations", "locations"):
            for entry in value:
                for sub, sub_value in entry.items():
                    if sub == "identifiers":
                        for ident in sub_value:
                            for ik, iv in ident.items():
                                add(f"subjects.identifiers.{ik}", iv)
                    else:
                        add(f"{key}.{sub}", sub_value)
        else:
            add(key, value)
    return found
