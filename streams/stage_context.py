"""What a stage's handler is built from: the hub's topics, the event log it reads and writes through, its
consumer group, and what the composition root provides from settings (keys, stores, the Collection Plan)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.correlate import Requirement
from domain.log import BatchHandler, EventLog
from domain.ports import AuditAnchors
from domain.state_store import StageState
from domain.working_set import TableStore
from streams.accept import AcceptStage
from streams.stages import Stage
from streams.topics import Topics


@dataclass(frozen=True)
class AuditKeys:
    """The chaining stage's keys: the hub's signing key for checkpoints, and the MAC key of every entry."""

    signing_key: Ed25519PrivateKey
    signing_key_id: str
    mac_key: bytes


class Provisions(Protocol):
    """What the stages need beyond the event log, built by the composition root from settings. Asked only by
    the stages that need it: a command that runs one stage builds nothing for the others."""

    def verification(self) -> AcceptStage:
        """The verify stage's checks: the agency key registry, the vault, the hub's keys, the limits."""

    def audit_keys(self) -> AuditKeys: ...

    def anchors(self) -> AuditAnchors: ...

    def collection_plan(self) -> list[Requirement]: ...

    def pseudonym_key(self) -> bytes:
        """The key of the pseudonyms the union shows each caller for an entity."""

    def partners(self) -> frozenset[str]:
        """The foreign partners agreements name: each gets a scope of its own in the union."""

    def stage_state(self, stage: str, version: int) -> StageState:
        """Stage `stage`'s durable state on this worker (domain/state_store.py), its entries in format
        `version`: a store holding another format is wiped and rebuilt from the topics."""

    def stage_tables(self, stage: str) -> TableStore:
        """Stage `stage`'s tables on this worker (domain/working_set.py), in the file of its `stage_state` (whose
        format check covers them)."""

    def correlator_cache(self) -> int:
        """How many entries of its tables the union stage keeps decoded in memory between batches."""


@dataclass(frozen=True)
class StageContext:
    topics: Topics
    log: EventLog  # the Kafka adapter in a worker, the in-memory log in unit tests
    group_id: str
    provisions: Provisions


HANDLERS = "streams.agents."


def build_handler(stage: Stage, context: StageContext) -> BatchHandler:
    """The handler of `stage`: what its module's `build(context)` makes (a module of streams.agents only: the
    one import the layering check cannot see, kept to where the stages live)."""
    if not stage.handler.startswith(HANDLERS):
        raise ValueError(f"stage {stage.name}: handler {stage.handler!r} is not a module of {HANDLERS.rstrip('.')}")
    build: Callable[[StageContext], BatchHandler] = import_module(stage.handler).build
    return build(context)
