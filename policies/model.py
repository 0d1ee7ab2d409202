"""Sharing agreements as immutable values.

A recipient agreement says what one recipient (a foreign partner or a domestic agency) may
receive and under which legal basis. An originator agreement says where a contributing agency
lets its reports go abroad. Both are versioned, dated, and identified by a content hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from typing import Any, Literal

from domain.facts import Rule as Rule  # what a decision does with a field (the read models hold decided rules too)

TLP_ORDER = ("CLEAR", "GREEN", "AMBER", "AMBER_STRICT", "RED")

# Every field a view can hold, the rules each allows, and what generalising it yields.
# A field not listed here, or listed without a rule in an agreement, is never shared.
FIELDS: dict[str, tuple[tuple[Rule, ...], str | None]] = {
    "indicator_type": (("share", "drop"), None),
    "tlp": (("share", "drop"), None),
    "purpose": (("share", "drop"), None),
    "observed_at": (("share", "generalise", "drop"), "the month (YYYY-MM)"),
    "source_agency": (("share", "generalise", "drop"), "the agency's sector (the code's prefix)"),
    "legal_basis": (("share", "drop"), None),
    "source_reliability": (("share", "drop"), None),
    "info_credibility": (("share", "drop"), None),
    "elements": (("share", "drop"), None),
    "subjects.role": (("share", "drop"), None),
    "subjects.name": (("share", "drop"), None),
    "subjects.date_of_birth": (("share", "generalise", "drop"), "the CTDC age band at observation"),
    "subjects.sex": (("share", "drop"), None),
    "subjects.nationality": (("share", "drop"), None),
    "subjects.minor": (("share", "drop"), None),
    "subjects.identifiers.kind": (("share", "drop"), None),
    "subjects.identifiers.issuer": (("share", "drop"), None),
    "subjects.identifiers.value": (("share", "drop"), None),
    "organisations.role": (("share", "drop"), None),
    "organisations.name": (("share", "drop"), None),
    "organisations.registration": (("share", "drop"), None),
    "organisations.country": (("share", "drop"), None),
    "locations.country": (("share", "drop"), None),
    "locations.place": (("share", "generalise", "drop"), "the country"),
    "narrative": (("share", "drop"), None),
}
SENSITIVE_FIELDS = frozenset(
    {"subjects.name", "subjects.date_of_birth", "subjects.identifiers.value", "organisations.registration", "narrative"}
)


@dataclass(frozen=True)
class FieldRule:
    rule: Rule
    clause: str


@dataclass(frozen=True)
class LegalBasis:
    instrument: str
    clause: str


class _VersionedAgreement:
    """What both kinds of agreement share: identity by content hash, and a validity window."""

    content: dict[str, Any]
    valid_from: date
    valid_until: date

    @cached_property
    def hash(self) -> str:
        canonical = json.dumps(self.content, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def in_force(self, at: datetime) -> bool:
        return self.valid_from <= at.date() <= self.valid_until


@dataclass(frozen=True)
class Agreement(_VersionedAgreement):
    """What one recipient may receive."""

    recipient: str
    kind: Literal["domestic", "foreign"]
    country: str
    version: int
    title: str
    legal_basis: tuple[LegalBasis, ...]
    valid_from: date
    valid_until: date
    purposes: frozenset[str] | None  # None: any purpose, including none stated
    indicator_types: frozenset[str] | None  # None: every type
    tlp_ceiling: str
    fields: dict[str, FieldRule]
    onward_sharing: bool
    retention_days: int
    content: dict[str, Any] = field(compare=False, repr=False)
    source: str = field(default="", compare=False)

    @property
    def label(self) -> str:
        return f"{self.recipient} agreement v{self.version}"


@dataclass(frozen=True)
class OriginatorAgreement(_VersionedAgreement):
    """Where a contributing agency lets what it contributed go abroad (originator control)."""

    originator: str
    version: int
    title: str
    legal_basis: tuple[LegalBasis, ...]
    valid_from: date
    valid_until: date
    foreign_release: frozenset[str]
    pre_authorised_release: frozenset[str]
    content: dict[str, Any] = field(compare=False, repr=False)
    source: str = field(default="", compare=False)

    @property
    def label(self) -> str:
        return f"{self.originator} originator agreement v{self.version}"


@dataclass(frozen=True)
class LoadedAgreement:
    """An agreement and the moment the hub started applying it (its load event)."""

    agreement: Agreement | OriginatorAgreement
    loaded_at: datetime


class AgreementSet:
    """Every version of every agreement the hub has loaded, so any past moment can be replayed."""

    def __init__(self, loaded: list[LoadedAgreement] | None = None) -> None:
        self._recipients: dict[str, list[LoadedAgreement]] = {}
        self._originators: dict[str, list[LoadedAgreement]] = {}
        for item in loaded or []:
            self.add(item)

    def add(self, item: LoadedAgreement) -> None:
        agreement = item.agreement
        index = self._recipients if isinstance(agreement, Agreement) else self._originators
        key = agreement.recipient if isinstance(agreement, Agreement) else agreement.originator
        versions = index.setdefault(key, [])
        if any(v.agreement.hash == agreement.hash for v in versions):
            return  # the same content loaded again changes nothing
        versions.append(item)
        versions.sort(key=lambda v: (v.loaded_at, v.agreement.version))

    @staticmethod
    def _at(versions: list[LoadedAgreement], at: datetime) -> Agreement | OriginatorAgreement | None:
        """The latest version loaded at or before `at`, if it is valid at `at`."""
        current = None
        for item in versions:
            if item.loaded_at <= at:
                current = item.agreement
        return current if current is not None and current.in_force(at) else None

    def recipient(self, recipient: str, at: datetime) -> Agreement | None:
        found = self._at(self._recipients.get(recipient, []), at)
        return found if isinstance(found, Agreement) else None

    def latest_recipient(self, recipient: str) -> Agreement | None:
        versions = self._recipients.get(recipient)
        agreement = versions[-1].agreement if versions else None
        return agreement if isinstance(agreement, Agreement) else None

    def originator(self, originator: str, at: datetime) -> OriginatorAgreement | None:
        found = self._at(self._originators.get(originator, []), at)
        return found if isinstance(found, OriginatorAgreement) else None

    def recipients(self) -> list[str]:
        return sorted(self._recipients)

    def all(self) -> list[LoadedAgreement]:
        return [v for versions in (*self._recipients.values(), *self._originators.values()) for v in versions]
