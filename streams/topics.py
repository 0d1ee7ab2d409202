"""The hub's topics (CONTRACT section 3): names, keys, partition counts and retention."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from domain.log import TopicSpec
from streams.stages import stage_inputs

DAY_MS = 24 * 3600 * 1000
FOREVER = -1


@dataclass(frozen=True)
class Topics:
    """Topic names under an optional prefix. Co-partitioned topics share one partition count."""

    prefix: str = ""
    partitions: int = 6

    def _name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    @property
    def submitted(self) -> str:
        return self._name("tip.reports.submitted")

    @property
    def verified(self) -> str:
        """Submissions that passed every check but uniqueness, repartitioned by report_id for the accept stage."""
        return self._name("tip.reports.verified")

    @property
    def accepted(self) -> str:
        return self._name("tip.reports.accepted")

    @property
    def rejected(self) -> str:
        return self._name("tip.reports.rejected")

    @property
    def erasures(self) -> str:
        return self._name("tip.erasures")

    @property
    def signals(self) -> str:
        return self._name("tip.signals")

    @property
    def summaries(self) -> str:
        return self._name("tip.summaries")

    @property
    def decisions(self) -> str:
        return self._name("tip.decisions")

    @property
    def audit(self) -> str:
        return self._name("tip.audit")

    @property
    def audit_intake(self) -> str:
        """Audit events from every writer, before the chaining stage orders and links them."""
        return self._name("tip.audit.intake")

    @property
    def retractions(self) -> str:
        """Reports withdrawn or corrected by their own agency."""
        return self._name("tip.retractions")

    @property
    def coverage(self) -> str:
        """Collection Plan coverage per requirement; the latest record of a key is current."""
        return self._name("tip.coverage")

    @property
    def agreements(self) -> str:
        """Agreement versions as they were loaded: what was in force at any moment."""
        return self._name("tip.agreements")

    @property
    def sightings(self) -> str:
        """Person occurrences repartitioned by linkage key, for the link stage (docs/correlation.md)."""
        return self._name("tip.sightings")

    @property
    def links(self) -> str:
        """Level-1 links between person occurrences; one partition, read whole by the union stage."""
        return self._name("tip.links")

    @property
    def entities(self) -> str:
        """EntityMerged facts: each entity's members as the union of links left them."""
        return self._name("tip.entities")

    @property
    def triage(self) -> str:
        """Analysts' triage states of signals, with sealed notes."""
        return self._name("tip.triage")

    def stage_inputs(self) -> dict[str, list[tuple[str, list[int]]]]:
        """Each stream stage's input partitions, the facts it reads in its transactions included: what its
        consumer group's lag is measured on, so a quiet hub has applied them too (streams/stages.py)."""
        return stage_inputs(self)

    def partitions_of(self, topic: str) -> int:
        """How many partitions the hub gives `topic` (ensure_topics holds every topic to it)."""
        return next(spec.partitions for spec in self.specs() if spec.name == topic)

    def specs(self) -> list[TopicSpec]:
        p = self.partitions
        return [
            TopicSpec(self.submitted, p, 7 * DAY_MS, broker_time=True),
            TopicSpec(self.verified, p, 7 * DAY_MS),
            TopicSpec(self.accepted, p, FOREVER),
            TopicSpec(self.rejected, p, 30 * DAY_MS),
            TopicSpec(self.erasures, p, FOREVER),
            TopicSpec(self.signals, p, FOREVER),
            TopicSpec(self.summaries, p, FOREVER),
            TopicSpec(self.decisions, p, FOREVER),
            TopicSpec(self.audit, p, FOREVER),
            TopicSpec(self.audit_intake, p, 30 * DAY_MS),
            TopicSpec(self.agreements, 1, FOREVER),
            TopicSpec(self.coverage, 1, 30 * DAY_MS),
            TopicSpec(self.retractions, p, FOREVER),
            TopicSpec(self.sightings, p, FOREVER),
            TopicSpec(self.links, 1, FOREVER),
            TopicSpec(self.entities, p, FOREVER),
            TopicSpec(self.triage, p, FOREVER),
        ]


def report_partition(report_id: str, partitions: int) -> int:
    """The one partition of tip.reports.verified and tip.reports.accepted that owns a report_id.

    Agencies choose the partitions they submit to; the hub does not trust that choice. Every
    submission of an id, whoever sends it to whichever partition, meets the others here, so one
    accept stage instance decides which is first, hub-wide. Stable across processes and releases."""
    return int.from_bytes(hashlib.sha256(b"tiphub/report|" + report_id.encode()).digest()[:8], "big") % partitions
