"""What a broker kind needs of the client beyond plain Kafka: one port, chosen by the broker's kind.

On Apache Kafka the hub runs the plain code path: no client patches, no sweep, no leaving the group
as a previous incarnation, no redo on a reconnect. On noida-db (the zero-install broker of `make
run`) each workaround below is on, for a defect measured there (docs/reliability.md):

- `leave_before_join`: a static member that rejoins is handed another member's partitions, and a
  member killed by SIGKILL is never evicted; a restarting worker removes its previous incarnation first.
- `sweep_after_abort`: after a restart the broker can forget a transaction its partitions keep open and
  hand the producer id out again; an aborted empty transaction ends it before the next commit.
- `redo_on_reconnect`: a commit across a broker restart can commit some partitions and abort others;
  a batch whose connection dropped is aborted and read again.
- `pace_empty_fetches`: an empty fetch is answered at once (no fetch.max.wait), so idle consumers spin.
- `accept_empty_assignments`: a SyncGroup answer with empty assignment bytes, which aiokafka cannot decode.
- `ignore_ended_aborts`: fetch answers list aborted transactions that ended before the fetch offset.

The kind comes from configuration (TIPHUB_BROKER_KIND) or, where unset, from the broker itself
(`detect_kind`): a broker that serves DescribeQuorum (KRaft's API, every Apache Kafka from 3.3 on) is
Apache Kafka. Any other broker (noida-db, but also ZooKeeper-mode Kafka, Redpanda, some proxies) gets
every workaround: each is also correct on Apache Kafka, only slower (a worker-kill test runs them there:
`test_noida_workarounds_keep_exactly_once_on_apache_kafka`); configure TIPHUB_BROKER_KIND=kafka for those.
A local broker the hub started is known by its kind, whatever is configured.

What is not a broker quirk and stays on every broker: the membership check before each commit
(aiokafka sends TxnOffsetCommit v0, without the generation KIP-447 fences on; the check narrows the
window, it does not close it: a worker paused longer than its session between the check and the commit
can still commit a batch its partitions' new owner also commits), waiting for open
transactions below the end before a restore (Apache Kafka also leaves a previous owner's transaction
open until its timeout), and replacing a producer whose state the broker lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

DESCRIBE_QUORUM = 55  # KRaft (KIP-595): Apache Kafka 3.3 and later serve it; noida-db does not
KINDS = ("kafka", "noida")
_resolved: dict[tuple[str, str | None], BrokerQuirks] = {}


@dataclass(frozen=True)
class BrokerQuirks:
    kind: str
    leave_before_join: bool = False
    sweep_after_abort: bool = False
    redo_on_reconnect: bool = False
    pace_empty_fetches: bool = False
    accept_empty_assignments: bool = False
    ignore_ended_aborts: bool = False

    def install(self) -> None:
        """Install this kind's client patches in this process (idempotent; none for Apache Kafka).
        Before any consumer of this process fetches."""
        from adapters.kafka import kafka_clients

        if self.pace_empty_fetches:
            kafka_clients.pace_empty_fetches()
        if self.accept_empty_assignments:
            kafka_clients.accept_empty_assignments()
        if self.ignore_ended_aborts:
            kafka_clients.ignore_ended_aborts()


APACHE_KAFKA = BrokerQuirks("kafka")
NOIDA = BrokerQuirks(
    "noida",
    leave_before_join=True,
    sweep_after_abort=True,
    redo_on_reconnect=True,
    pace_empty_fetches=True,
    accept_empty_assignments=True,
    ignore_ended_aborts=True,
)


def quirks_for(kind: str) -> BrokerQuirks:
    if kind == "kafka":
        return APACHE_KAFKA
    if kind == "noida":
        return NOIDA
    raise ValueError(f"broker kind {kind!r} is not one of {', '.join(KINDS)}")


def kind_from_api_versions(versions: dict[int, Any]) -> str:
    """The kind a broker's ApiVersions answer shows: Apache Kafka if it serves DescribeQuorum."""
    return "kafka" if DESCRIBE_QUORUM in {int(key) for key in versions} else "noida"


def detect_kind(bootstrap: str, **options: Any) -> str:
    """Ask the broker (one ApiVersions round trip)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **options)
    try:
        return kind_from_api_versions(admin.api_versions())
    finally:
        admin.close()


def resolve_quirks(bootstrap: str, configured: str | None = None, **options: Any) -> BrokerQuirks:
    """The quirks for the broker at `bootstrap`, installed in this process: of the configured kind, else of
    the detected one. The broker is asked either way: a configured kind it contradicts is logged, since
    running noida-db without its workarounds loses exactly-once (a ZooKeeper-mode Apache Kafka, which
    serves no DescribeQuorum, is the case where configuring kafka is right). Asked once per process and
    broker (a worker resolves its broker, then runs its stages on it)."""
    known = _resolved.get((bootstrap, configured))
    if known is not None:
        return known
    detected = detect_kind(bootstrap, **options)
    kind = configured or detected
    if configured and configured != detected:
        log.warning(
            "broker %s: TIPHUB_BROKER_KIND=%s, but it answers like %s; running with %s's quirks",
            bootstrap,
            configured,
            detected,
            configured,
        )
    quirks = quirks_for(kind)
    quirks.install()
    log.info("broker %s: %s%s", bootstrap, kind, "" if configured else " (detected)")
    _resolved[(bootstrap, configured)] = quirks
    return quirks
