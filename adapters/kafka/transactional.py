"""A transactional consume-transform-produce loop on aiokafka: exactly-once on SIGKILL.

Each batch: read (read_committed) -> handle -> produce outputs and the input offsets in one
Kafka transaction. A crash before commit aborts it; the batch is read again and its outputs
are written once. Measured on noida-db (BROKER-NOTES) and Apache Kafka: 0 lost, 0 duplicated, where
faust's exactly_once duplicated. Static group membership lets a restarted worker take its old place.
What a broker kind needs beyond that (noida-db's workarounds) comes from its `BrokerQuirks`. The handler
and its outputs are the event-log ports of domain/log.py; adapters/kafka/log.py builds processors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    IllegalStateError,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    InvalidTxnState,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
    for_code,
)
from aiokafka.protocol.group import HeartbeatRequest, LeaveGroupRequest

from adapters.kafka.broker_quirks import BrokerQuirks
from adapters.kafka.kafka_clients import stop_consumer
from adapters.kafka.stable_offsets import stable_committed
from domain.log import BatchHandler, Output, Stop, Written
from domain.log import TopicPartition as LogPartition

log = logging.getLogger(__name__)
# The producer's state and the broker's disagree (seen after a noida-db restart, which forgets producer
# sequence numbers): retrying with the same producer fails forever. A new producer with the same
# transactional id starts a fresh epoch, and nothing is lost (the batch is read again).
PRODUCER_STATE_LOST = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    InvalidTxnState,
)
# An idle stage commits positions that moved over commit markers this often: its lag reads 0 that much
# sooner after the last batch (a local check when nothing moved; one commit when something did).
IDLE_COMMIT_S = 0.25
REWIND_WITHIN_S = 75.0  # a broker away (or a dead producer's transaction pending) this long stops the worker


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, processor: TransactionalProcessor) -> None:
        self.processor = processor

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # The batch in flight commits (or aborts) before these partitions go to another worker, which
        # then reads from after that commit. Without this, a worker could commit a batch of partitions
        # it no longer owned after the new owner had read the old offsets: both would write its outputs.
        # (aiokafka's send_offsets_to_transaction carries no group generation for the broker to fence it.)
        async with self.processor.in_flight:
            self.processor.generation += 1  # a batch fetched before this point is discarded
            self.processor.handler.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.processor.generation += 1
        self.processor.forget_commits()
        # The restore starts here but is not awaited: aiokafka sends no heartbeat until this callback returns,
        # and a restore longer than the 10 s session would have the member thrown out of its group, rejoin,
        # and restore again, for ever (seen at 10^4 reports). Every handler restores (or waits for this
        # restore, under its lock) before it handles a batch, so nothing is judged against missing state.
        self.processor.restoring = asyncio.create_task(
            self._restore(set(assigned)), name=f"{self.processor.group_id} restore"
        )

    async def _restore(self, assigned: set[TopicPartition]) -> None:
        try:
            await self.processor.handler.on_assigned(assigned)
        except Exception as exc:  # the broker away, say: every handler restores before its first batch anyway
            log.warning("restoring state at assignment failed (%s); the first batch restores it", type(exc).__name__)


@dataclass
class ProcessorStats:
    batches: int = 0
    records: int = 0
    outputs: int = 0
    aborts: int = 0
    last_error: str | None = field(default=None)


class TransactionalProcessor:
    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        instance_id: str,
        input_topic: str,
        handler: BatchHandler,
        client_options: dict[str, Any] | None = None,
        max_records: int = 500,
        poll_ms: int = 50,
        max_consecutive_failures: int = 20,
        also_from: list[str] | None = None,
        quirks: BrokerQuirks,
    ) -> None:
        """`also_from`: further input topics read in the same transactions (e.g. facts like erasures).
        `quirks`: what the broker's kind needs beyond plain Kafka (adapters/kafka/broker_quirks.py)."""
        self.group_id = group_id
        self.input_topic = input_topic
        self.also_from = also_from or []
        self.handler = handler
        self.max_records = max_records
        self.poll_ms = poll_ms
        self.max_consecutive_failures = max_consecutive_failures
        self.stats = ProcessorStats()
        self._committed: dict[TopicPartition, int] = {}  # committed since its assignment (idle commits)
        self._checked: set[TopicPartition] = set()  # partitions whose first batch was checked against the group
        self.in_flight = asyncio.Lock()  # held for a batch's whole transaction; a revocation waits for it
        self.generation = 0  # moves on every revocation and assignment
        self.restoring: asyncio.Future[None] | None = None  # the restore an assignment started
        self._idle_check = 0.0
        self._written: set[tuple[str, int]] = set()  # every partition of the topics this processor writes
        self._sweep_due = False
        options = client_options or {}
        member = f"{group_id}.{instance_id}"
        self.bootstrap, self.member, self.quirks, self.options = bootstrap, member, quirks, options
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group_id,
            group_instance_id=member,
            client_id=member,  # names the member in DescribeGroups, so a restart can find its previous incarnation
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            max_partition_fetch_bytes=4 << 20,
            **options,
        )
        self.producer = self._new_producer()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            transactional_id=self.member,  # the same id after a restart fences the dead incarnation
            linger_ms=2,
            max_batch_size=512 * 1024,
            max_request_size=4 << 20,
            **self.options,
        )

    async def run(self, stop: Stop) -> None:
        if self.quirks.leave_before_join:
            await leave_previous_incarnation(self.bootstrap, self.group_id, self.member, self.options)
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe([self.input_topic, *self.also_from], listener=_Listener(self))
        failures = 0
        try:
            while not stop.is_set():
                generation = self.generation
                batch = await self.consumer.getmany(timeout_ms=self.poll_ms, max_records=self.max_records)
                if not batch:
                    try:
                        await self._commit_idle_positions()
                        await self._tick()
                    except KafkaError as exc:  # bookkeeping only: try again on the next idle second
                        log.warning("idle positions not committed (%s)", type(exc).__name__)
                    except Exception as exc:
                        log.warning("idle tick aborted (%s); trying again", type(exc).__name__)
                        self.handler.aborted()
                        self._sweep_due = True
                    continue
                try:
                    await self._process(batch, generation)
                    failures = 0
                except ProducerFenced:
                    log.error("another worker took this worker's transactional id; stopping")
                    raise
                except Exception as exc:
                    failures += 1
                    self.stats.aborts += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("batch aborted (%s); reading it again", self.stats.last_error)
                    self.handler.aborted()
                    self._sweep_due = True
                    if isinstance(exc, PRODUCER_STATE_LOST) or producer_broken(self.producer):
                        # First: the new producer's initialisation ends a transaction the old one left open,
                        # which the rewind would otherwise wait for.
                        await self._replace_producer()
                    await self._rewind(batch)
                    if failures >= self.max_consecutive_failures:
                        raise
                    await asyncio.sleep(min(0.1 * 2**failures, 5.0))
        finally:
            if self.restoring is not None and not self.restoring.done():
                self.restoring.cancel()
                await asyncio.gather(self.restoring, return_exceptions=True)
            await stop_consumer(self.consumer)
            await self.producer.stop()
            await self.handler.close()

    async def _replace_producer(self) -> None:
        log.warning("the broker lost this producer's state; starting a new one with the same transactional id")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.producer.stop(), 10)
        self.producer = self._new_producer()
        await self.producer.start()

    def forget_commits(self) -> None:
        """After a rebalance: what this worker committed before is no guide to the new assignment."""
        self._committed.clear()
        self._checked.clear()

    async def _process(self, batch: dict[TopicPartition, list[Any]], generation: int) -> None:
        async with self.in_flight:
            if generation != self.generation:
                # A rebalance happened while this batch was fetched. Its partitions may be another
                # worker's now (processing them would write their outputs twice), and getmany may even
                # have returned records of the new assignment. So drop the batch and read the partitions
                # still ours again from the committed offset: everything before it was processed.
                log.info("a rebalance overtook a batch: reading its partitions again from the commits")
                await self._rewind(batch)
                return
            if not await self._from_where_the_group_committed(batch):
                return
            if self._sweep_due:
                await self._sweep()
                self._sweep_due = False
            await self._transact(batch)

    async def _from_where_the_group_committed(self, batch: dict[TopicPartition, list[Any]]) -> bool:
        """Whether the first batch of newly assigned partitions starts where the group committed, as it
        stands once every pending transaction ended. aiokafka positions them from a plain OffsetFetch,
        which answers the offsets from before a transaction that committed but whose markers are not
        written yet (the previous owner's last batch, say): its records would be processed twice. If
        so, the batch is dropped and its partitions read again from the stable offsets."""
        unchecked = set(batch) - self._checked
        if not unchecked:
            return True
        stable = await stable_committed(self.consumer, unchecked, within_s=REWIND_WITHIN_S)
        self._checked |= unchecked
        behind = {tp for tp in unchecked if (stable[tp] or 0) > batch[tp][0].offset}
        if not behind:
            return True
        log.warning("positioned before the group's commit on %s: reading from the commit", sorted(behind))
        for tp, records in batch.items():
            with contextlib.suppress(IllegalStateError):  # revoked meanwhile: its new owner positions it
                self.consumer.seek(tp, stable[tp] if tp in behind else records[0].offset)
        return False

    async def _check_membership(self) -> None:
        """Just before a batch commits: is this worker still in the group's current generation?

        aiokafka's transactional offset commit carries no generation (KIP-447), so the broker cannot
        refuse a batch from a worker the group has moved on from. A worker learns that it lost its
        partitions only at its next heartbeat, or not at all while its connection is down (a broker
        restart). Meanwhile the new owner processes the same records: measured, 510 decisions written
        by two workers after a broker restart. One heartbeat here narrows that window to the time
        between its answer and the commit, for one round trip per batch; a worker paused for longer than
        its session timeout in between (a stall of the machine) can still commit a stale batch. Closing
        it needs TxnOffsetCommit v3 (KIP-447), which aiokafka 0.14 does not send."""
        coordinator = self.consumer._coordinator
        if coordinator is None or coordinator.coordinator_id is None:
            raise StaleMembership("no group coordinator known; not committing this batch")
        request = HeartbeatRequest(self.group_id, coordinator.generation, coordinator.member_id)
        response = await coordinator._send_req(request)
        error = for_code(response.error_code)
        if error.errno != 0:
            raise StaleMembership(f"the group moved on ({error.__name__}); not committing this batch")

    async def _sweep(self) -> None:
        """After a failed batch, end whatever a broker restart may have left open under this producer.

        Each partition this processor writes gets one empty record in a transaction that is then
        aborted. noida-db, restarted under a transaction, can forget it while its partitions keep it
        open, and hands the same producer id and epoch out again: the next transaction's commit
        marker then committed the forgotten records too (measured: 145 decisions written twice).
        This abort marker ends the forgotten transaction first, so its records stay invisible. On
        Apache Kafka the failed transaction is already aborted, and this costs one small aborted
        transaction per failed batch, so it runs on noida-db only (`BrokerQuirks.sweep_after_abort`)."""
        if not self._written or not self.quirks.sweep_after_abort:
            return
        await self.producer.begin_transaction()
        try:
            sends = [
                await self.producer.send(topic, key=b"tiphub-sweep", value=b"", partition=partition)
                for topic, partition in sorted(self._written)
            ]
            await asyncio.gather(*sends)
        finally:
            await self.producer.abort_transaction()

    async def _transact(self, batch: dict[TopicPartition, list[Any]]) -> None:
        records = [record for tp in sorted(batch) for record in batch[tp]]
        async with self.producer.transaction():
            connected = live_connections(self.producer) if self.quirks.redo_on_reconnect else set()
            outputs = await self.handler.handle(records)
            written = await self._send(outputs)
            # The consumer's position, not last offset + 1: it has stepped over the commit markers
            # of transactional input, so the group's lag really reaches zero.
            offsets = {tp: max(await self.consumer.position(tp), msgs[-1].offset + 1) for tp, msgs in batch.items()}
            await self._check_membership()
            await self.producer.send_offsets_to_transaction(offsets, self.group_id)
            if self.quirks.redo_on_reconnect and not connected <= live_connections(self.producer):
                # A connection of this transaction dropped and the client carried on over a new one:
                # the broker may have restarted under it. noida-db then committed some of its
                # partitions and aborted the others while accepting the commit of the rest
                # (docs/reliability.md); Apache Kafka does not (`BrokerQuirks.redo_on_reconnect`).
                raise ConnectionLostInTransaction("a broker connection dropped during the transaction")
        self._written_at(written)
        self.handler.committed()
        self._committed.update(offsets)
        self.stats.batches += 1
        self.stats.records += len(records)
        self.stats.outputs += len(outputs)

    async def _tick(self) -> None:
        """When idle, what the handler has to write because time passed (a wall-clock punctuation, like
        Kafka Streams'): its outputs in a transaction of their own, with no input offsets."""
        tick = getattr(self.handler, "tick", None)
        if tick is None:
            return
        async with self.in_flight:
            outputs = await tick()
            if not outputs:
                return
            if self._sweep_due:
                await self._sweep()
                self._sweep_due = False
            async with self.producer.transaction():
                written = await self._send(outputs)
                await self._check_membership()
            self._written_at(written)
            self.handler.committed()

    def _written_at(self, written: list[Written]) -> None:
        """Tell a handler that asks where its committed outputs landed (BatchHandler.written)."""
        hook = getattr(self.handler, "written", None)
        if hook is not None:
            hook(written)

    async def _send(self, outputs: list[Output]) -> list[Written]:
        """Send outputs within the open transaction and wait for every acknowledgement; remember every
        partition of the topics written, for the sweep. Returns where each output landed, in order."""
        for topic in {o.topic for o in outputs} - {topic for topic, _ in self._written}:
            self._written |= {(topic, p) for p in await self.producer.partitions_for(topic)}
        sends = [
            await self.producer.send(
                o.topic, key=o.key, value=o.value, partition=o.partition, headers=list(o.headers) or None
            )
            for o in outputs
        ]
        landed = await asyncio.gather(*sends)
        return [(LogPartition(meta.topic, meta.partition), meta.offset) for meta in landed]

    async def _commit_idle_positions(self) -> None:
        """When idle, commit positions that moved over commit markers alone (no output to pair with)."""
        now = asyncio.get_running_loop().time()
        if now - self._idle_check < IDLE_COMMIT_S:
            return
        self._idle_check = now
        moved = {}
        assigned = self.consumer.assignment()
        if unknown := assigned - self._committed.keys():
            # After a restart: what the group had committed. Aborted records and markers left by a
            # killed predecessor are skipped without ever reaching us; their offsets must be committed too.
            stable = await stable_committed(self.consumer, unknown, within_s=IDLE_COMMIT_S * 20)
            self._committed.update({tp: offset or 0 for tp, offset in stable.items()})
        for tp in assigned:
            position = await self.consumer.position(tp)
            if position > self._committed[tp]:
                moved[tp] = position
        if moved:
            await self.consumer.commit(moved)
            self._committed.update(moved)

    async def _rewind(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """After an abort, read the batch again from where the group committed.

        That is asked of the broker as it stands once pending transactions ended: a plain OffsetFetch can
        answer the offsets from before this worker's last commit while its markers are being written
        (adapters/kafka/stable_offsets.py). A stage that restores its state again after an abort replays its
        input up to the same answer (`committed_offsets`), so the two meet with no record in between. The
        broker may be away (restarting, a leader moving); then ask again: a batch must be read again, never
        skipped and never re-read from the partition's beginning. If the broker stays away, stop: a restart
        resumes from the commit.
        """
        generation = self.generation
        mine = {tp for tp in batch if tp in self.consumer.assignment()}  # the others' new owners position them
        committed = await stable_committed(self.consumer, mine, within_s=REWIND_WITHIN_S)
        if generation != self.generation:
            return  # a rebalance meanwhile: the partitions still ours are positioned from the commits anyway
        for tp in sorted(mine):
            if tp not in self.consumer.assignment():
                continue  # revoked while the broker was asked: not ours to position any more
            try:
                if committed[tp] is None:
                    await self.consumer.seek_to_beginning(tp)
                else:
                    self.consumer.seek(tp, committed[tp])
            except IllegalStateError:
                continue  # revoked between the check and the seek


class ConnectionLostInTransaction(KafkaError):  # type: ignore[misc]
    """Raised inside a transaction to abort it and read its batch again."""


class StaleMembership(KafkaError):  # type: ignore[misc]
    """This worker may no longer own the batch's partitions: its transaction is aborted."""


def live_connections(producer: AIOKafkaProducer) -> set[int]:
    """The producer's open broker connections, by identity: a reconnect shows as one missing."""
    conns = getattr(getattr(producer, "client", None), "_conns", None) or {}
    return {id(conn) for conn in conns.values() if conn.connected()}


def producer_broken(producer: AIOKafkaProducer) -> bool:
    """Whether a producer can never run another transaction: its sender task died (aiokafka ends it
    on an error it does not expect, such as the coordinator lookup failing while a broker restarts)
    or its transaction manager reached FATAL_ERROR. Every later batch would fail the same way
    (measured: "Invalid state transition FATAL_ERROR -> IN_TRANSACTION" until the stage gave up)."""
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    manager = getattr(producer, "_txn_manager", None)
    return bool((task is not None and task.done()) or (manager is not None and manager.is_fatal_error()))


async def leave_previous_incarnation(
    bootstrap: str, group_id: str, client_id: str, client_options: dict[str, Any] | None = None
) -> int:
    """Remove group members that carry this member's client id: a killed predecessor.

    noida-db never evicts a member killed by SIGKILL, and when a static member rejoins it hands
    it the partitions of another member (measured: two static members, one restarted, and both
    own the same partition while the others go unread). Leaving first makes the join a fresh one:
    the group rebalances and the leader assigns every partition once. Returns how many left.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(client_options or {}))
    await admin.start()
    try:
        node = await admin.find_coordinator(group_id)
        left = 0
        for response in await admin.describe_consumer_groups([group_id], group_coordinator_id=node):
            for group in response.to_object()["groups"]:
                for member in group["members"]:
                    if member["client_id"] == client_id:
                        await admin._send_request(LeaveGroupRequest(group_id, member["member_id"]), node)
                        left += 1
        if left:
            log.info("%s: removed %d previous incarnation(s) from the group", client_id, left)
        return left
    finally:
        await admin.close()
