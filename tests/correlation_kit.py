"""An in-process pipeline for correlation tests: real envelopes, real accept stage, real tokens."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import yaml

from adapters.memory.vault import InMemoryKeyVault
from adapters.sql.database import Database
from adapters.sql.registry import KeyRegistry
from domain.correlate import Correlator, load_plan
from domain.facts import facts_from_accepted
from domain.linkage import Linker
from domain.linking import KeyIndex, Link, by_partition, sightings_of
from policies.loader import AGREEMENTS_DIR
from streams.accept import AcceptStage, Submission
from tests.envelopes import EnvelopeKit
from tiphub.keys import KeyStore
from tiphub.runtime import init_keys
from tiphub.settings import Settings

PLAN = load_plan(yaml.safe_load((AGREEMENTS_DIR.parent / "collection_plan.yaml").read_text()))


class Pipeline:
    """`mode` "single" correlates in one process; "partitioned" runs the stream design: sightings
    repartitioned by linkage key over `partitions` link-stage indexes, their links and the reports fed
    to the union correlator interleaved in a seeded random order (links may come before reports)."""

    def __init__(self, home: Path, mode: str = "single", partitions: int = 3) -> None:
        self.mode = mode
        self.partitions = partitions
        init_keys(Settings(home=home))
        store = KeyStore(home)
        self.kit = EnvelopeKit(home, epoch=False)
        self.stage = AcceptStage(
            registry=KeyRegistry(Database(f"sqlite:///{home}/registry.sqlite3")),
            vault=InMemoryKeyVault(),
            hub_key=store.hub_encryption_key(),
            hub_key_id=store.hub_key_id(),
            linker=Linker.latest(store.linkage_keys()),
        )

    def accept(self, reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
        now = int(time.time() * 1000)
        out = []
        for start in range(0, len(reports), 200):
            chunk = [
                Submission("s", 0, i, *self.kit.wire(self.kit.envelope(r)), now)
                for i, r in enumerate(reports[start : start + 200])
            ]
            for verdict in self.stage.process(chunk):
                assert verdict.accepted is not None, verdict.rejected
                out.append(verdict.accepted)
        return out

    def correlate(self, accepted: list[dict[str, Any]], seed: int = 0) -> Correlator:
        if self.mode == "partitioned":
            return correlate_partitioned(accepted, self.partitions, seed)
        correlator = Correlator(PLAN)
        for record in accepted:
            correlator.add(facts_from_accepted(record))
        return correlator


def correlate_partitioned(accepted: list[dict[str, Any]], partitions: int, seed: int = 0) -> Correlator:
    facts = [facts_from_accepted(record) for record in accepted]
    indexes = [KeyIndex() for _ in range(partitions)]
    link_batches: list[list[Link]] = []
    for report in facts:
        for partition, sightings in by_partition(sightings_of(report), partitions).items():
            link_batches.append([link for s in sightings for link in indexes[partition].add(s)])
    events: list[tuple[str, Any]] = [("report", f) for f in facts] + [("links", b) for b in link_batches]
    random.Random(seed).shuffle(events)
    union = Correlator(PLAN, external_links=True)
    for kind, item in events:
        if kind == "report":
            union.add(item)
        else:
            union.add_links(item)
    return union


def state_of(correlator: Correlator) -> dict[str, Any]:
    """What a correlator knows, independent of the order it learnt it in (and of where it keeps it)."""
    indexes = ("by_document", "by_dob", "by_ny", "by_ny_without_dob", "by_contact", "by_org", "by_subject")
    return {
        "reports": dict(correlator.reports),
        "occurrences": dict(correlator.occurrences),
        "level1": {frozenset(members) for members in correlator.level1_members.values()},
        "roots": {o: correlator.uf.find(o) for o in correlator.occurrences},
        "entity_of": dict(correlator.entity_of),
        "entity_members": dict(correlator.entity_members),
        # Which clusters are near which: near links go to any occurrence of a date, so which ones is arrival order.
        "near": {
            frozenset(members): frozenset(frozenset(correlator.level1_members[r]) for r in correlator.near_roots(root))
            for root, members in correlator.level1_members.items()
            if correlator.near_roots(root)
        },
        **{name: {k: v for k, v in getattr(correlator, name).items() if v} for name in indexes},
        "considered": {r: n for r, n in correlator.considered.items() if n},
        "reporting": {r: +c for r, c in correlator.reporting.items() if +c},
        "erased": set(correlator.erased),
        "retracted": set(correlator.retracted),
        "signals": correlator.evaluate(),
    }
