"""Level-1 linking, partitioned by linkage key (the repartition step of docs/correlation.md).

The accept stage writes each person occurrence once per linkage key it carries (its document
tokens, its keyed full DOB, its keyed name+year keys) to the partition of tip.sightings that key
hashes to. Everyone who shares a key therefore meets in one partition, and the link stage there
compares a newcomer only with the occurrences already filed under the same key, exactly the
candidates the single-process correlator compares. It emits a `Link` per match; the union stage
joins links into entities. The final set of links, and so of entities, does not depend on the
order sightings arrive in: whichever of two occurrences comes second makes the link.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from domain.facts import PersonOccurrence, ReportFacts, near_match, strong_match

SIGHTINGS = "tiphub.SightingBatch"
LINKS = "tiphub.LinkBatch"
ENTITY_MERGED = "tiphub.EntityMerged"


@dataclass(frozen=True)
class Link:
    a: str
    b: str
    basis: str  # document | dob | dob_near | name_year

    @staticmethod
    def of(x: str, y: str, basis: str) -> Link:
        return Link(min(x, y), max(x, y), basis)


@dataclass(frozen=True)
class Sighting:
    key: str  # doc:<token> | dob:<keyed DOB> | ny:<keyed name+year>
    occ_id: str
    subject_key_id: str
    clk: bytes | None
    dob_key: str | None
    ny_keys: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        return {**self.__dict__, "ny_keys": list(self.ny_keys)}

    @staticmethod
    def from_record(record: dict[str, Any]) -> Sighting:
        return Sighting(**{**record, "ny_keys": tuple(record["ny_keys"])})

    def to_json(self) -> str:
        """The sighting as the link stage's state file keeps it: JSON, never a pickled object."""
        clk = None if self.clk is None else base64.b64encode(self.clk).decode()
        return json.dumps({**self.record(), "clk": clk}, separators=(",", ":"), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Sighting:
        """Read back what `to_json` wrote; ValueError for anything else."""
        held = json.loads(text)
        strings = ("key", "occ_id", "subject_key_id")
        if (
            not isinstance(held, dict)
            or set(held) != {*strings, "clk", "dob_key", "ny_keys"}
            or not all(isinstance(held[name], str) for name in strings)
            or not isinstance(held["clk"], str | None)
            or not isinstance(held["dob_key"], str | None)
            or not isinstance(held["ny_keys"], list)
            or not all(isinstance(k, str) for k in held["ny_keys"])
        ):
            raise ValueError("not a stored sighting")
        clk = None if held["clk"] is None else base64.b64decode(held["clk"], validate=True)
        return Sighting(
            held["key"], held["occ_id"], held["subject_key_id"], clk, held["dob_key"], tuple(held["ny_keys"])
        )


def sightings_of(report: ReportFacts) -> list[Sighting]:
    """One sighting per (person occurrence, linkage key). Contacts are not level-1 keys."""
    out = []
    for occ in report.people:
        # Document tokens of every linkage key version the report carries, each filed on its own.
        keys = {f"doc:{t}": occ for t in occ.documents}
        # Fuzzy keys travel with the encoding of their own version: comparisons never mix versions.
        for variant in occ.variants():
            keys.update(dict.fromkeys([variant.dob_key] if variant.dob_key else [], variant))
            keys.update(dict.fromkeys(variant.ny_keys, variant))
        for key, material in keys.items():
            # A sighting is compared only with those filed under its own key, so the name key it needs is that one:
            # two filed under one `ny:` or `nd:` key share it. Carrying all of the occurrence's keys stored each of
            # them once per key the occurrence has: most of the link stage's state.
            own = (key,) if key.startswith(("ny:", "nd:")) else ()
            out.append(Sighting(key, occ.occ_id, occ.subject_key_id, material.clk, material.dob_key, own))
    return out


def partition_of(key: str, partitions: int) -> int:
    """The tip.sightings partition of a linkage key: stable across processes and releases."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % partitions


def by_partition(sightings: Iterable[Sighting], partitions: int) -> dict[int, list[Sighting]]:
    grouped: dict[int, list[Sighting]] = defaultdict(list)
    for sighting in sightings:
        grouped[partition_of(sighting.key, partitions)].append(sighting)
    return dict(grouped)


def _occurrence(s: Sighting) -> PersonOccurrence:
    return PersonOccurrence(s.occ_id, "", "", None, s.subject_key_id, (), (), s.clk, s.dob_key, s.ny_keys)


NEAR_REPS = 2  # occurrences filed per date of birth under an `nd:` key (domain/correlate.py keeps as many)


@dataclass
class KeyIndex:
    """The occurrences filed under each linkage key of some partitions, and the links they make."""

    filed: dict[str, dict[str, Sighting]] = field(default_factory=lambda: defaultdict(dict))
    erased: set[str] = field(default_factory=set)

    def add(self, sighting: Sighting) -> list[Link]:
        if sighting.subject_key_id in self.erased:
            return []
        under = self.filed[sighting.key]
        if sighting.occ_id in under:
            return []  # re-delivered: its links were made the first time
        if sighting.key.startswith("nd:"):
            return self._add_near(sighting, under)
        links = [self._link(sighting, other) for other in under.values()]
        under[sighting.occ_id] = sighting
        return [link for link in links if link is not None]

    def _add_near(self, sighting: Sighting, under: dict[str, Sighting]) -> list[Link]:
        """Under an `nd:` key: a near link to one occurrence of each other date that near-matches (all of one
        name and date are one cluster: one of them reaches it), and the sighting filed only while its date has
        fewer than `NEAR_REPS` there, so that a crowd of namesakes costs a batch its few dates, not the crowd."""
        by_date: dict[str | None, list[Sighting]] = defaultdict(list)
        for other in sorted(under.values(), key=lambda s: s.occ_id):
            by_date[other.dob_key].append(other)
        links = []
        for date, others in by_date.items():
            if date == sighting.dob_key:
                continue
            found = next((link for other in others if (link := self._link(sighting, other)) is not None), None)
            if found is not None:
                links.append(found)
        if len(by_date.get(sighting.dob_key, ())) < NEAR_REPS:
            under[sighting.occ_id] = sighting
        return links

    @staticmethod
    def _link(new: Sighting, other: Sighting) -> Link | None:
        if new.key.startswith("doc:"):
            return Link.of(new.occ_id, other.occ_id, "document")
        if new.key.startswith("ny:") and new.dob_key and other.dob_key:
            return None  # two full DOBs are compared under their dob: key, never on name+year alone
        if new.key.startswith("nd:"):
            # One DOB: the dob: key links them, once (equal dates share all their nd: keys). Near dates make a
            # link of its own basis, which the correlator weighs at level 2.
            near = near_match(_occurrence(new), _occurrence(other))
            return Link.of(new.occ_id, other.occ_id, "dob_near") if near else None
        if strong_match(_occurrence(new), _occurrence(other)):
            basis = "dob" if new.key.startswith("dob:") else "name_year"
            return Link.of(new.occ_id, other.occ_id, basis)
        return None

    def erase(self, subject_key_ids: Iterable[str]) -> None:
        gone = set(subject_key_ids) - self.erased
        self.erased |= gone
        if not gone:
            return
        for key in list(self.filed):
            kept = {o: s for o, s in self.filed[key].items() if s.subject_key_id not in gone}
            if kept:
                self.filed[key] = kept
            else:
                del self.filed[key]
