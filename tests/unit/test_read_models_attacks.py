"""Attacks on the gateway's read models, from an outside review: each test is one way a writer of a topic, a
second gateway or a recreated topic could make the gateway show what it must not or stop showing what it
must. The smallest setup that shows it: the SQL store alone, or the tail on a fake Kafka consumer (the
integration tests run the tail on real brokers)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

import adapters.kafka.tail as tail_module
from adapters.kafka.tail import Tail
from adapters.sql.read_models import SqlReadModels, StoreOfOtherTopics
from domain.audit_chain import entry_hash, entry_mac
from streams.audit_events import AUDIT_EVENT, audit_event
from streams.topics import Topics
from tests.unit.test_read_models import (
    CODEC,
    HUB_KEY,
    MAC,
    Topic,
    audit_record,
    decision,
    rejection,
    signal,
    url,
)

__all__ = ["url"]


@pytest.fixture
def views(url: str) -> Iterator[SqlReadModels]:
    store = SqlReadModels(url, Topics(), MAC, HUB_KEY.public_key())
    yield store
    store.close()


def retraction(report_id: str, agency: str = "NZ-POL") -> bytes:
    fact = {"report_id": report_id, "source_agency": agency, "reason": "ENTERED_IN_ERROR", "corrected_by": None}
    return CODEC.encode("tiphub.ReportRetracted", fact | {"signing_key_id": "k", "retracted_at": datetime.now(UTC)})


def erasure(subject_key: str) -> bytes:
    fact = {"subject_key_id": subject_key, "report_id": "r", "erased_at": datetime.now(UTC)}
    return CODEC.encode("tiphub.SubjectErased", fact | {"reason": "court", "requested_by": "op"})


# -- 1. one chained audit event whose detail is not a JSON object must not wedge the whole tail -----------------
def test_an_audit_event_whose_detail_is_not_a_json_object_does_not_stop_the_other_topics_folding(
    views: SqlReadModels,
) -> None:
    """Whoever may write tip.audit.intake (the operator and gateway principals) can put any string in an
    AuditEvent's `detail`: chain_audit checks only that the record decodes as an AuditEvent, then MACs it. The
    audit fold does json.loads(detail).get(...) on it; a list (or non-JSON text) raises, the batch's transaction
    rolls back, and the tail reads the same batch again every second, forever: no retraction, erasure or
    decision in that batch (or after it) is ever folded, and a restarting gateway never becomes ready (503)."""
    topic = views.topics.audit
    prev = b"\x00" * 32
    event = CODEC.encode(AUDIT_EVENT, audit_event("disclosure", "operator:x", "shown", item_id="r1") | {"detail": "[]"})
    digest = entry_hash(prev, 0, event)
    chained = audit_record(0, 0, prev, event, entry_mac(MAC, topic, 0, 0, prev, digest))  # as chain_audit writes it
    batch = [Topic(topic)(chained), Topic(views.topics.retractions)(retraction("r-retracted"))]
    views.apply(batch)  # the event is stepped over, not retried forever
    assert views.retracted("r-retracted")
    page, _ = views.audit_events([0] * views.topics.partitions, 10)
    assert [e["item_id"] for _, e in page] == ["r1"]  # a chained event is shown; its odd detail does not stop it


# -- 2. the erased set cached by a reader must not miss an erasure ------------------------------------------------
@pytest.mark.parametrize("url", ["sqlite"], indirect=True)
def test_an_erasure_folded_while_a_request_reads_the_erased_set_is_not_lost_from_it(views: SqlReadModels) -> None:
    """erased() reads rm_erased on the request's thread and then caches the result; apply() (the fold thread)
    resets the cache after its commit. A commit landing between the request's SELECT and its assignment is
    overwritten by the older set, which then stays cached until the next erasure is folded (possibly never):
    open_view and the originator's view keep opening that person's fields wherever the vault still has the key
    (the erase command writes the fact before destroying keys; a restored vault backup has them back)."""
    erasures = Topic(views.topics.erasures)
    real_query = views.db.query

    def query_then_fold_lands(sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        rows = real_query(sql, params)
        if "FROM rm_erased" in sql:  # the fold thread commits an erasure right after this SELECT ran
            folder = threading.Thread(target=views.apply, args=([erasures(erasure("k-erased"))],))
            folder.start()
            folder.join()
        return rows

    views.db.query = query_then_fold_lands  # type: ignore[method-assign]
    assert "k-erased" not in views.erased()  # the request raced the fold: fine for this one request
    views.db.query = real_query  # type: ignore[method-assign]
    assert "k-erased" in views.erased()  # but every later request must see the erasure


# -- 3. a store of another prefix on the same database is refused, not wiped --------------------------------------
def test_a_gateway_of_another_prefix_on_the_same_store_does_not_wipe_a_running_gateways_models(
    url: str,
) -> None:
    """Two gateways share one store (several instances on one PostgreSQL; or one SQLite file). One of another
    topic prefix pointed at it by mistake must not wipe it under the running gateway (whose signal feeds would
    then wait for seq 1 forever, withholding every new version): it is refused, with the setting to change."""
    running = SqlReadModels(url, Topics(), MAC, HUB_KEY.public_key())
    signals = Topic(running.topics.signals)
    running.apply([signals(signal("sig-1", 1, 1, ["r1"])), signals(signal("sig-1", 2, 2, ["r1"]))])
    with pytest.raises(StoreOfOtherTopics, match="TIPHUB_READ_MODEL_URL"):
        SqlReadModels(url, Topics("rebuild."), MAC, HUB_KEY.public_key())
    running.apply([signals(signal("sig-1", 3, 3, ["r1"]))])  # the running gateway's next batch
    try:
        assert [v["seq"] for v in running.signal_versions("NZ-NIC", 0, 10)] == [1, 2, 3]
    finally:
        running.close()


# -- 4. topics recreated: the store is not trusted, even once the new topics have reached its positions ----------
class FakeConsumer:
    """Just enough of AIOKafkaConsumer for Tail, over `LOG` (TopicPartition -> values, offsets from 0)."""

    LOG: dict[TopicPartition, list[bytes]] = {}

    def __init__(self, **_: Any) -> None:
        self.at: dict[TopicPartition, int] = {}
        self.tps: list[TopicPartition] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def assign(self, tps: list[TopicPartition]) -> None:
        self.tps = list(tps)

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.LOG.get(tp, [])) for tp in tps}

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in tps}

    def seek(self, tp: TopicPartition, at: int) -> None:
        self.at[tp] = at

    async def position(self, tp: TopicPartition) -> int:
        return self.at[tp]

    async def getmany(self, timeout_ms: int = 0, max_records: int = 0) -> dict[TopicPartition, list[Any]]:
        out = {}
        for tp in self.tps:
            values = self.LOG.get(tp, [])
            if self.at[tp] < len(values):
                out[tp] = [
                    SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=o, key=None, value=v, timestamp=0)
                    for o, v in enumerate(values)
                    if o >= self.at[tp]
                ]
                self.at[tp] = len(values)
        if not out:
            await asyncio.sleep(timeout_ms / 1000)
        return out


def tail_once(views: SqlReadModels) -> None:
    async def run() -> None:
        tail = Tail("fake:9092", views.topics, views.tailed(), views)
        await tail.start()
        await asyncio.wait_for(tail.ready.wait(), 10)
        await tail.stop()

    asyncio.run(run())


@pytest.mark.parametrize("url", ["sqlite"], indirect=True)
def test_a_store_of_topics_since_recreated_is_not_trusted_once_the_new_topics_reach_its_positions(
    views: SqlReadModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tail.start wipes the store only when a stored position is beyond a topic's end. Topics deleted and created
    again (a restore into a new cluster, a mirror, a mistaken bootstrap) that have since grown to or past the
    stored positions are taken for the same topics: the gateway resumes mid-way through records it never read.
    Here NZ-NIC's sharing of r1 was revoked and r1 retracted in the recreated topics, both at offsets below the
    stored positions: the gateway keeps serving r1 to NZ-NIC. (Even if it read them, the decision fold's offset
    guard would refuse the revocation: its offset is lower than the old decision's.) The worker's state store
    checks the record its checkpoint was taken after (streams/checkpointed.py); the gateway's store does not."""
    monkeypatch.setattr(tail_module, "AIOKafkaConsumer", FakeConsumer)
    topics = views.topics
    decisions, retractions = TopicPartition(topics.decisions, 0), TopicPartition(topics.retractions, 0)
    FakeConsumer.LOG = {  # the old topics
        decisions: [decision("NZ-NIC", "r1"), decision("NZ-NIC", "r2")],
        retractions: [retraction("r0")],
    }
    tail_once(views)
    held = views.decision("NZ-NIC", "r1")
    assert held is not None and held.allowed and not views.retracted("r1")

    FakeConsumer.LOG = {  # deleted and created again under the same names, and written since
        decisions: [decision("NZ-NIC", "r1", allowed=False), decision("NZ-NIC", "r2"), decision("NZ-NIC", "r3")],
        retractions: [retraction("r1"), retraction("r0")],
    }
    tail_once(views)
    now = datetime.now(UTC)
    revoked = views.decision("NZ-NIC", "r1")
    assert revoked is not None and not revoked.in_force(now), "a revoked sharing is still in force"
    assert views.retracted("r1"), "a retracted report is still shown"


# -- 5. rejections do not outlive tip.reports.rejected's 30-day retention -------------------------------------
@pytest.mark.parametrize("url", ["sqlite"], indirect=True)
def test_rejections_are_not_served_after_the_topics_retention(views: SqlReadModels) -> None:
    """CONTRACT 3: tip.reports.rejected is kept 30 days. The old gateway rebuilt its rejection fold from the topic
    at each start, so what retention deleted went with the next restart; the read models keep every rejection
    for ever (no path deletes rm_rejections rows: Tail seeks to max(stored, beginning) and the sweep only touches
    decisions), serve it on /v1/reports/rejected and the status route, and grow with every rejection."""
    old = rejection("a-old", "A")
    value = CODEC.decode(old)[1] | {"rejected_at": datetime.now(UTC) - timedelta(days=45)}
    views.apply([Topic(views.topics.rejected)(CODEC.encode("tiphub.RejectedReport", value))])
    views.expire(datetime.now(UTC))
    assert views.rejection("A", "a-old") is None
    assert views.rejections("A", [0] * views.topics.partitions, 10)[0] == []
