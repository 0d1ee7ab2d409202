"""Drives a hub under test: its keys, topics, worker processes, and reading its topics back."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from adapters.kafka.apache_kafka import KafkaCluster
from adapters.kafka.embedded import EmbeddedBroker, ensure_topics, free_port
from adapters.kafka.feeds import read_until
from domain.audit_chain import entry_hash
from domain.log import Record
from domain.scoped import HUB_SCOPE
from schemas.codec import WireCodec
from streams.agents.correlate_signals import signal_from_record
from streams.audit_events import AUDIT_EVENT, audit_event
from streams.stages import STAGES, group_id, stage_named
from tiphub.runtime import init_keys, new_producer, publishers_for, topics_for
from tiphub.settings import Settings

PARTITIONS = 3


@dataclass
class Hub:
    broker: str
    home: Path
    prefix: str
    settings: Settings
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @classmethod
    def create(cls, broker: str, tmp: Path, name: str, keys_from: Path | None = None, replication: int = 1) -> Hub:
        """A hub with fresh keys, or with a copy of another hub's keys (the same hub, replayed). Its topics
        have `replication` copies (min.insync.replicas=2 from three)."""
        prefix = "t" + re.sub(r"[^a-z0-9]+", "-", name.lower())[:40] + "-" + uuid.uuid4().hex[:6] + "."
        settings = Settings(
            home=tmp / "home", broker=broker, topic_prefix=prefix, partitions=PARTITIONS, replication_factor=replication
        )
        if keys_from is not None:
            shutil.copytree(keys_from / "keys", settings.home / "keys")
        init_keys(settings)
        hub = cls(broker, settings.home, prefix, settings)
        ensure_topics(broker, hub.topics.specs(), replication)
        return hub

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *_: object) -> None:
        for name in list(self.workers):
            self.stop_worker(name)
        self.drop_topics()

    def drop_topics(self) -> None:
        """Delete this hub's topics: the embedded broker rewrites its whole state about once a second, so
        a test session that kept every finished hub's records would slow down as it goes."""

        async def run() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.broker)
            await admin.start()
            try:
                await admin.delete_topics([spec.name for spec in self.topics.specs()])
            finally:
                await admin.close()

        try:
            asyncio.run(run())
        except Exception as exc:  # a broker that cannot delete topics keeps them: slower, not wrong
            print(f"topics of {self.prefix} kept ({type(exc).__name__})")

    @property
    def topics(self):  # type: ignore[no-untyped-def]
        return topics_for(self.settings)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "TIPHUB_HOME": str(self.home),
            "TIPHUB_BROKER": self.broker,
            "TIPHUB_TOPIC_PREFIX": self.prefix,
            "TIPHUB_PARTITIONS": str(PARTITIONS),
            **({"TIPHUB_BROKER_KIND": broker_kind()} if broker_kind() in ("kafka", "noida") else {}),
            **extra,
        }

    # -- processes ------------------------------------------------------------------------
    def start_worker(self, instance: str = "0", **env: str) -> subprocess.Popen[bytes]:
        with (self.home / f"worker-{instance}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tiphub", "worker", "--instance-id", instance],
                env=self.env(**env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.workers[instance] = process
        return process

    def kill_worker(self, instance: str = "0") -> None:
        process = self.workers.pop(instance)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop_worker(self, instance: str = "0") -> int:
        process = self.workers.pop(instance)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        return process.returncode

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`tiphub ARGS` against this hub, as an operator runs it."""
        return subprocess.run(
            [sys.executable, "-m", "tiphub", *args], env=self.env(), capture_output=True, text=True, timeout=timeout
        )

    def worker_log(self, instance: str = "0") -> str:
        return (self.home / f"worker-{instance}.log").read_text(errors="replace")

    # -- publishing -----------------------------------------------------------------------
    def publish(self, reports: Iterable[dict[str, Any]]) -> list[str]:
        """Publish each report as its source agency, with the demo keys. Returns report ids."""
        reports = list(reports)

        async def run() -> list[str]:
            producer = new_producer(self.broker)
            await producer.start()
            try:
                agencies = sorted({r["source_agency"] for r in reports})
                publishers = publishers_for(self.settings, self.broker, producer, agencies)
                sends = []
                for report in reports:
                    publisher = publishers[report["source_agency"]]
                    report_id, value = publisher.prepare(report)
                    sends.append(await producer.send(publisher.topic, key=report_id.encode(), value=value))
                await asyncio.gather(*sends)
                return [r["report_id"] for r in reports]
            finally:
                await producer.stop()

        return asyncio.run(run())

    def send_raw(
        self, items: Iterable[tuple[bytes | None, bytes] | tuple[bytes | None, bytes, int]], topic: str | None = None
    ) -> None:
        """Write records as they are, each optionally to a partition of the writer's choosing (as any
        client with write access to the topic can)."""

        async def run() -> None:
            producer = new_producer(self.broker, {"max_request_size": 8 << 20})
            await producer.start()
            try:
                for key, value, *partition in items:
                    await producer.send_and_wait(
                        topic or self.topics.submitted,
                        key=key,
                        value=value,
                        partition=partition[0] if partition else None,
                    )
            finally:
                await producer.stop()

        asyncio.run(run())

    # -- reading back ---------------------------------------------------------------------
    def read(self, topic: str) -> list[Record]:
        return asyncio.run(read_topics(self.broker, [topic]))

    def decoded(self, topic: str) -> list[dict[str, Any]]:
        codec = WireCodec()
        return [codec.decode(r.value)[1] for r in self.read(topic)]

    def outcomes(self) -> tuple[list[Record], list[dict[str, Any]]]:
        """(accepted records, decoded rejections)."""
        return self.read(self.topics.accepted), self.decoded(self.topics.rejected)

    def wait_for_quiet(self, timeout: float = 120.0) -> None:
        """Wait until every stage has committed everything before it (transaction markers aside)."""
        deadline = time.monotonic() + timeout
        while any(self.lag(stage.name) > 0 for stage in STAGES):
            if time.monotonic() >= deadline:
                behind = {stage.name: {tp: n for tp, n in self.lags(stage.name).items() if n} for stage in STAGES}
                for process in self.workers.values():  # each logs where its tasks wait (tiphub/worker.py)
                    if process.poll() is None:
                        process.send_signal(signal.SIGUSR1)
                time.sleep(1.0)
                raise AssertionError(
                    f"stages did not catch up: { ({name: tps for name, tps in behind.items() if tps}) }; "
                    f"transactions nobody ends (stable offset stuck below the end): {self.orphaned_transactions(5)}\n"
                    + "\n".join(self.worker_log(i)[-30000:] for i in self.workers)
                )
            time.sleep(0.5)

    def wait_for_outcomes(self, total: int, timeout: float = 120.0) -> tuple[list[Record], list[dict[str, Any]]]:
        """Wait until accepted + rejected reach `total` and the worker has committed everything."""
        deadline = time.monotonic() + timeout
        while True:
            accepted, rejected = self.outcomes()
            if len(accepted) + len(rejected) >= total and self.lag("verify") == 0 and self.lag("accept") == 0:
                return accepted, rejected
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"after {timeout:.0f}s: {len(accepted)} accepted + {len(rejected)} rejected of {total}, "
                    f"lag {self.lag('verify')}+{self.lag('accept')}; worker log tail:\n"
                    + "\n".join(self.worker_log(i)[-30000:] for i in self.workers)
                    if self.workers
                    else ""
                )
            time.sleep(0.5)

    def lag(self, stage: str = "accept") -> int:
        """Records a stage has not committed yet: verify, accept, decide, audit, link or correlate (the union)."""
        return sum(self.lags(stage).values())

    def lags(self, stage: str) -> dict[str, int]:
        """A stage's lag per input partition: {topic[partition]: end - committed}."""

        async def run() -> dict[str, int]:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.broker)
            consumer = AIOKafkaConsumer(bootstrap_servers=self.broker)
            await admin.start()
            await consumer.start()
            try:
                committed = await admin.list_consumer_group_offsets(group_id(self.settings, stage))
                inputs = stage_named(stage).inputs(self.topics)
                tps = [TopicPartition(topic, p) for topic, partitions in inputs for p in partitions]
                ends = await consumer.end_offsets(tps)
                return {
                    f"{tp.topic}[{tp.partition}]": ends[tp] - (committed[tp].offset if tp in committed else 0)
                    for tp in tps
                }
            finally:
                await consumer.stop()
                await admin.close()

        return asyncio.run(run())

    def orphaned_transactions(self, watch_s: float = 10.0) -> dict[str, int]:
        """Partitions of the hub's topics whose stable offset stays below their end for `watch_s`
        while nothing is written to them: a transaction nobody will end. Apache Kafka aborts one
        at its timeout; noida-db, after a restart, can forget it and never does (docs/reliability.md).
        Returns {topic[partition]: stable offset}."""

        async def snapshot() -> dict[str, tuple[int, int]]:
            committed = AIOKafkaConsumer(bootstrap_servers=self.broker, isolation_level="read_committed")
            everything = AIOKafkaConsumer(bootstrap_servers=self.broker, isolation_level="read_uncommitted")
            await committed.start()
            await everything.start()
            try:
                tps = [TopicPartition(spec.name, p) for spec in self.topics.specs() for p in range(spec.partitions)]
                stable, ends = await committed.end_offsets(tps), await everything.end_offsets(tps)
                return {f"{tp.topic}[{tp.partition}]": (stable[tp], ends[tp]) for tp in tps}
            finally:
                await committed.stop()
                await everything.stop()

        before = asyncio.run(snapshot())
        time.sleep(watch_s)
        after = asyncio.run(snapshot())
        return {name: lso for name, (lso, end) in after.items() if lso < end and before.get(name) == (lso, end)}


async def read_topics(broker: str, topics: list[str], isolation: str = "read_committed") -> list[Record]:
    """Every record of `topics` from the beginning to the current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker,
        enable_auto_commit=False,
        isolation_level=isolation,
        max_partition_fetch_bytes=16 << 20,
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in (consumer.partitions_for_topic(t) or await _partitions(consumer, t))
        ]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records = await read_until(consumer, tps, await consumer.end_offsets(tps))
        return [
            Record(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers), r.timestamp, r.timestamp_type)
            for r in records
        ]
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer._client.cluster.partitions_for_topic(topic) or set()


def final_signals(hub: Hub, scope: str | None = HUB_SCOPE) -> dict[str, dict[str, Any]]:
    """Latest version of every signal of `scope` (None: of every scope; ids are keyed per scope, so they
    never collide), without what legitimately differs between runs."""
    latest: dict[str, tuple[int, dict[str, Any]]] = {}
    for record in hub.decoded(hub.topics.signals):
        if scope is not None and record["scope"] != scope:
            continue
        version, signal = signal_from_record(record)
        if version > latest.get(signal.signal_id, (0, {}))[0]:
            latest[signal.signal_id] = (version, {**signal.__dict__, "scope": record["scope"], "updated_at": None})
    return {k: v for k, (_, v) in latest.items()}


def versions_are_gapless(hub: Hub) -> None:
    """Each signal's versions are 1, 2, 3, ... and each scope's feed numbers (seq) too."""
    seen: dict[str, list[int]] = {}
    seqs: dict[str, list[int]] = {}
    for record in hub.decoded(hub.topics.signals):
        seen.setdefault(record["signal_id"], []).append(record["version"])
        seqs.setdefault(record["scope"], []).append(record["seq"])
    for signal_id, versions in seen.items():
        assert versions == list(range(1, len(versions) + 1)), (signal_id, versions)
    for scope, numbers in seqs.items():
        assert sorted(numbers) == list(range(1, len(numbers) + 1)), (scope, numbers)


def open_signals(signals: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The answer a run gives: which merged entities existed on the way depends on arrival order."""
    return {k: v for k, v in signals.items() if v["status"] == "open"}


def flatten_strings(value: Any) -> Iterable[str]:
    """Every string (and bytes decoded leniently) inside a decoded record."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from flatten_strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from flatten_strings(v)
    elif isinstance(value, bytes):
        yield value.decode("utf-8", errors="ignore")
    elif value is not None:
        yield str(value)


@dataclass(frozen=True)
class ForgedAuditEntry:
    partition: int
    offset: int
    seq: int
    hash: bytes
    after: dict[str, Any]  # the authentic entry it links to


def forge_audit_entry(hub: Hub, partition: int, item_id: str = "forged") -> ForgedAuditEntry:
    """Append to tip.audit what anyone with write access to the topic can, without the hub's keys: an
    entry that links perfectly to the partition's last entry (the next seq, that entry's hash as
    prev_hash, a correct hash of its own event), only without a MAC."""
    codec = WireCodec()
    records = [r for r in hub.read(hub.topics.audit) if r.partition == partition]
    last = [codec.decode(r.value)[1] for r in records if codec.decode(r.value)[1]["event"] is not None][-1]
    event = codec.encode(
        AUDIT_EVENT, audit_event("decision", "decide_sharing", "shared", item_id=item_id, recipient="NZ-NIC")
    )
    seq = last["seq"] + 1
    forged = {**last, "seq": seq, "prev_hash": last["hash"], "hash": entry_hash(last["hash"], seq, event)}
    value = codec.encode("tiphub.AuditRecord", {**forged, "event": event, "mac": None, "written_at": datetime.now(UTC)})

    async def run() -> int:
        producer = new_producer(hub.broker)
        await producer.start()
        try:
            return int((await producer.send_and_wait(hub.topics.audit, value, partition=partition)).offset)
        finally:
            await producer.stop()

    return ForgedAuditEntry(partition, asyncio.run(run()), seq, forged["hash"], last)


__all__ = [
    "ForgedAuditEntry",
    "Hub",
    "Record",
    "TracebackType",
    "assert_everything_once",
    "broker_kind",
    "final_signals",
    "flatten_strings",
    "forge_audit_entry",
    "local_broker",
    "open_signals",
    "read_topics",
    "versions_are_gapless",
]


def assert_everything_once(hub: Hub, reports: list[dict]) -> dict[str, int]:
    """Every report accepted once; every (report, recipient) decided once and audited once; signal
    versions gapless; the audit chain verifies; every lag 0. Returns the counts it checked."""
    accepted = Counter(r.key.decode() for r in hub.read(hub.topics.accepted))
    assert accepted == Counter({r["report_id"]: 1 for r in reports})
    rejected = hub.decoded(hub.topics.rejected)
    assert rejected == [], [
        (r["reason"], r["report_id"], f"{r['source_topic']}:{r['source_partition']}:{r['source_offset']}")
        for r in rejected[:10]
    ]
    decisions = Counter((d["item_id"], d["recipient"]) for d in hub.decoded(hub.topics.decisions))
    assert len(decisions) == 5 * len(reports)  # nothing missing
    assert set(decisions.values()) == {1}, [k for k, n in decisions.items() if n > 1][:5]  # nothing twice
    entries = [e for e in hub.decoded(hub.topics.audit) if e["event"] is not None]
    audited = Counter()
    for entry in entries:
        event = WireCodec().decode(entry["event"])[1]
        audited[(event["item_id"], event["recipient"])] += 1
    assert audited == decisions, "every decision audited exactly once"
    counts = {"decisions": len(decisions), "audit_entries": len(entries)}
    versions_are_gapless(hub)
    verify = subprocess.run(
        [sys.executable, "-m", "tiphub", "audit", "verify"], env=hub.env(), capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    for stage in STAGES:
        assert hub.lag(stage.name) == 0, stage.name
    return counts


REPO = Path(__file__).resolve().parents[1]
# Where the launcher keeps the resolved classpath of the pinned Apache Kafka (the jars stay in ~/.m2).
KAFKA_CACHE = Path(os.environ.get("TIPHUB_KAFKA_CACHE", REPO / "build" / "kafka"))


def broker_kind() -> str:
    """TIPHUB_TEST_BROKER: kafka (default: one Apache Kafka node this session starts), noida (the embedded
    noida-db), testcontainers, or HOST:PORT of a running broker."""
    return os.environ.get("TIPHUB_TEST_BROKER") or "kafka"


def local_broker(data_dir: Path) -> EmbeddedBroker | KafkaCluster:
    """A broker of the session's kind (kafka or noida) with its own data dir, not started."""
    if broker_kind() == "noida":
        return EmbeddedBroker(data_dir, port=free_port())
    return KafkaCluster(data_dir, 1, cache=KAFKA_CACHE, die_with_parent=True)
