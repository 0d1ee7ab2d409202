"""faust Tables against the stage state store, on the accept stage's state (issue 16; docs/performance.md,
"faust Tables vs the stage state store"):

    python -m benchmarks.faust_tables --broker-kind kafka|noida --keys N [--parts sqlite,tables,kill]

The state is the accept stage's: report_id -> the agency it was accepted from, looked up and set per record
(every key new, so every record is one miss and one set). Prints one JSON object per measurement.

- `sqlite`: adapters/sql/state.py in a child process, driven as streams/agents/accept_reports.py drives it
  (batches of 500 records over 3 partitions; per batch and partition one `get` with IN and one `commit`
  with the partition's checkpoint): records/s, restore after a restart (open the file, read the
  checkpoints, judge one batch), file size, RSS.
- `tables`: a faust worker (a child process) whose agent reads the N records from a 3-partition topic and
  does `table.get(key)`, then `table[key] = agency`, for a Table on `rocksdb://` and on `memory://`, and
  for a plain dict (the agent's own cost, no table). Records/s in the agent; time from the worker's start to
  its first processed record: on an empty table, after a clean stop (RocksDB: its local files present;
  memory: the changelog replayed), and for RocksDB with its files deleted (the changelog replayed); the
  changelog's length; RocksDB's size on disk; the worker's RSS.
- `kill`: the same agent as the accept stage would run it (a miss: set and send an accepted record; a hit:
  send a rejection) on RocksDB and on memory, with `exactly_once` and with at-least-once, SIGKILLed twice mid-stream and
  restarted (static membership). Then the table the last worker holds against the input and against the
  accepted records on the output topic read_committed: keys missing or extra, duplicates, rejections.

faust and rocksdict (`pip install rocksdict==0.3.29`) are needed; neither is part of `make test`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import faust

PARTITIONS = 3
APP = os.environ.get("FT_APP", "ft-bench")
MODE = os.environ.get("FT_MODE", "table")  # table | dict | accept
STATS = Path(os.environ.get("FT_STATS", "/tmp/ft-stats.json"))  # noqa: S108 (the worker's child env sets it)

app = faust.App(
    APP,
    broker=f"kafka://{os.environ.get('FT_BROKER', '127.0.0.1:9092')}",
    store=os.environ.get("FT_STORE", "memory://"),
    processing_guarantee=os.environ.get("FT_GUARANTEE", "at_least_once"),
    datadir=os.environ.get("FT_DATADIR", f"{APP}-data"),
    topic_partitions=PARTITIONS,
    consumer_group_instance_id=f"{APP}-0",
    broker_commit_interval=0.5,
    table_standby_replicas=0,  # one worker: no other worker to hold a standby
    web_enabled=False,
)
source = app.topic(f"{APP}.in", key_serializer="raw", value_serializer="raw", partitions=PARTITIONS)
sink = app.topic(f"{APP}.out", key_serializer="raw", value_serializer="raw", partitions=PARTITIONS)
owners = (
    app.Table(
        "owners",
        partitions=PARTITIONS,
        key_type=bytes,  # raw bytes in the store and the changelog, as the state store holds text
        value_type=bytes,
    )
    if MODE != "dict"
    else {}
)
progress: dict[str, Any] = {"pid": os.getpid(), "processed": 0, "first": None, "last": None}


@app.agent(source)
async def accept(stream):  # type: ignore[no-untyped-def]
    async for key, agency in stream.items():
        owner = owners.get(key)
        if owner is None:
            owners[key] = agency
        if MODE == "accept":
            await sink.send(key=key, value=b"A" if owner is None else b"R")
        now = time.time()
        progress["first"] = progress["first"] or now
        progress["last"] = now
        progress["processed"] += 1


@app.timer(0.2)
async def report() -> None:
    """The agent's progress for the parent; on request (a `.dump` file), the table's keys."""
    request = STATS.with_suffix(".dump")
    if request.exists():
        keys = sorted(k.decode() for k in owners)
        STATS.with_suffix(".keys").write_text(json.dumps(keys))
        request.unlink()
    STATS.with_suffix(".tmp").write_text(json.dumps(progress))
    STATS.with_suffix(".tmp").replace(STATS)


# -- the parent -----------------------------------------------------------------------------------------


def _load() -> str:
    return os.getloadavg()[0].__format__(".2f")


class Worker:
    """One faust worker process of scenario `app_id`."""

    def __init__(self, broker: str, app_id: str, work: Path, **env: str) -> None:
        self.app_id, self.work = app_id, work
        self.stats = work / f"{app_id}.stats.json"
        self.env = {
            **os.environ,
            "FT_BROKER": broker,
            "FT_APP": app_id,
            "FT_STATS": str(self.stats),
            "FT_DATADIR": str(work / f"{app_id}-data"),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        self.stats.unlink(missing_ok=True)
        with (self.work / f"{self.app_id}.log").open("ab") as out:
            self.started = time.time()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "faust", "-A", "benchmarks.faust_tables:app", "worker", "-l", "warn"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def progress(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.stats.read_text()))
        except (OSError, ValueError):
            return {"processed": 0, "first": None, "last": None}

    def wait_processed(self, count: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (held := self.progress())["processed"] < count:
            if time.monotonic() > deadline or (self.process and self.process.poll() is not None):
                raise RuntimeError(f"{self.app_id}: {held['processed']} of {count} processed; see its log")
            time.sleep(0.1)
        return held

    def wait_idle(self, quiet: float, timeout: float) -> dict[str, Any]:
        """Until the worker processed something and then nothing for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            held = self.progress()
            if held["last"] and time.time() - held["last"] > quiet:
                return held
            time.sleep(0.5)
        return self.progress()

    def keys(self, timeout: float = 120) -> list[str]:
        request = self.stats.with_suffix(".dump")
        request.touch()
        deadline = time.monotonic() + timeout
        while request.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        return list(json.loads(self.stats.with_suffix(".keys").read_text()))

    def rss_mb(self) -> float:
        import psutil

        assert self.process is not None
        return round(psutil.Process(self.process.pid).memory_info().rss / 2**20, 1)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> float:
        """Stop it; how long it took."""
        assert self.process is not None
        began = time.monotonic()
        self.process.send_signal(sig)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return round(time.monotonic() - began, 2)


def _key(i: int) -> bytes:
    return f"r{i:08d}".encode()


async def _produce(broker: str, topic: str, start: int, count: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=broker, enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        sends = [
            await producer.send(topic, key=_key(i), value=f"AGENCY-{i % 20:02d}".encode())
            for i in range(start, start + count)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def _read(broker: str, topic: str) -> list[Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from adapters.kafka.feeds import read_until

    consumer = AIOKafkaConsumer(bootstrap_servers=broker, isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        return await read_until(consumer, tps, await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def _length(broker: str, topic: str) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=broker)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return int(sum((await consumer.end_offsets(tps)).values()))
    finally:
        await consumer.stop()


def _create(broker: str, *topics: str) -> None:
    from kafka.admin import NewTopic

    from adapters.kafka.embedded import admin_client

    admin = admin_client(broker)
    admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    admin.close()


def _du_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 2) if path.exists() else 0.0


def _cpu(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def tables(broker: str, broker_pids: list[int], work: Path, keys: int, store: str) -> dict[str, Any]:
    """Throughput in the agent and restart recovery, for one store (`rocksdb`, `memory` or `dict`)."""
    app_id = f"ft-{store}-{keys}"
    _create(broker, f"{app_id}.in", f"{app_id}.out")
    asyncio.run(_produce(broker, f"{app_id}.in", 0, keys))
    mode = "dict" if store == "dict" else "table"
    worker = Worker(broker, app_id, work, FT_STORE=f"{'memory' if store == 'dict' else store}://", FT_MODE=mode)
    out: dict[str, Any] = {"part": "tables", "store": store, "keys": keys, "load_1min_at_start": _load()}
    cpu_before = _cpu(broker_pids)
    worker.start()
    held = worker.wait_processed(keys, timeout=keys / 200 + 180)
    out["start_to_first_record_empty_s"] = round(held["first"] - worker.started, 2)
    out["records_per_s"] = round((keys - 1) / (held["last"] - held["first"]), 0)
    out["broker_cpu_s_during_run"] = round(_cpu(broker_pids) - cpu_before, 1)
    out["worker_rss_mb"] = worker.rss_mb()
    time.sleep(2)  # past a commit interval: the changelog and offsets are flushed by the clean stop anyway
    out["clean_stop_s"] = worker.stop()
    if store == "dict":
        return out
    out["changelog_records"] = asyncio.run(_length(broker, f"{app_id}-owners-changelog"))
    out["local_store_mb"] = _du_mb(work / f"{app_id}-data")
    restarts = [("restart_with_local_files" if store == "rocksdb" else "restart_changelog_replay", False)]
    if store == "rocksdb":
        restarts.append(("restart_local_files_deleted", True))
    for n, (name, delete) in enumerate(restarts):
        if delete:
            shutil.rmtree(work / f"{app_id}-data")
        asyncio.run(_produce(broker, f"{app_id}.in", keys + n, 1))  # one new record: when is it processed?
        worker.start()
        held = worker.wait_processed(1, timeout=keys / 100 + 300)
        out[f"{name}_to_first_record_s"] = round(held["first"] - worker.started, 2)
        out[f"{name}_table_keys"] = len(worker.keys())
        out[f"{name}_rss_mb"] = worker.rss_mb()
        worker.stop()
    out["load_1min_at_end"] = _load()
    return out


def kill(broker: str, work: Path, keys: int, guarantee: str, store: str = "rocksdb") -> dict[str, Any]:
    """The accept agent SIGKILLed twice mid-stream: does the table the last worker holds match what it did?"""
    app_id = f"ft-kill-{guarantee}-{store}-{keys}"
    _create(broker, f"{app_id}.in", f"{app_id}.out")
    asyncio.run(_produce(broker, f"{app_id}.in", 0, keys))
    worker = Worker(broker, app_id, work, FT_STORE=f"{store}://", FT_MODE="accept", FT_GUARANTEE=guarantee)
    out: dict[str, Any] = {"part": "kill", "guarantee": guarantee, "store": store, "keys": keys, "load": _load()}
    for _ in range(2):
        worker.start()
        worker.wait_processed(int(keys * 0.3), timeout=keys / 100 + 180)
        worker.stop(signal.SIGKILL)
    worker.start()
    held = worker.wait_processed(1, timeout=keys / 100 + 300)
    out["last_start_to_first_record_s"] = round(held["first"] - worker.started, 2)
    worker.wait_idle(quiet=8, timeout=keys / 50 + 300)
    table = set(worker.keys())
    worker.stop()
    sent = {_key(i).decode() for i in range(keys)}
    records = asyncio.run(_read(broker, f"{app_id}.out"))
    accepted = Counter(r.key.decode() for r in records if r.value == b"A")
    rejected = Counter(r.key.decode() for r in records if r.value == b"R")
    out |= {
        "table_keys": len(table),
        "table_missing_input_keys": len(sent - table),
        "table_extra_keys": len(table - sent),
        "output_accepted_records": sum(accepted.values()),
        "output_accepted_duplicates": sum(n - 1 for n in accepted.values() if n > 1),
        "input_keys_never_accepted": len(sent - accepted.keys()),
        "output_rejected_records": sum(rejected.values()),
        "table_keys_without_accepted_record": len(table - accepted.keys()),
        "accepted_keys_not_in_table": len(accepted.keys() - table),
    }
    return out


def sqlite(keys: int, batch: int = 500) -> dict[str, Any]:
    """adapters/sql/state.py as the accept stage drives it, in this process (run it in a child of its own)."""
    import psutil

    from adapters.sql.state import SqlStageState, open_state_database
    from domain.log import TopicPartition
    from domain.state_store import Checkpoint, Entry, record_digest

    work = Path(tempfile.mkdtemp(prefix="ft-sqlite-"))
    path = work / "worker-0.sqlite3"
    state = SqlStageState(open_state_database(path), "accept", 1)
    tps = [TopicPartition("tip.reports.accepted", p) for p in range(PARTITIONS)]
    offsets = dict.fromkeys(tps, 0)
    out: dict[str, Any] = {"part": "sqlite", "keys": keys, "batch": batch, "load_1min_at_start": _load()}
    out["rss_mb_before"] = round(psutil.Process().memory_info().rss / 2**20, 1)  # python, faust imported
    began = time.perf_counter()
    for start in range(0, keys, batch):
        by_tp: dict[TopicPartition, list[tuple[str, str]]] = {}
        for i in range(start, min(start + batch, keys)):
            by_tp.setdefault(tps[i % PARTITIONS], []).append((_key(i).decode(), f"AGENCY-{i % 20:02d}"))
        known = {tp: state.get(tp, [k for k, _ in pairs]) for tp, pairs in by_tp.items()}
        for tp, pairs in by_tp.items():
            new = [Entry(k, a) for k, a in pairs if k not in known[tp]]
            offsets[tp] += len(pairs)
            last = offsets[tp] - 1
            state.commit(tp, new, Checkpoint(last + 1, last, record_digest(pairs[-1][0].encode(), b"x")))
    elapsed = time.perf_counter() - began
    out["records_per_s"] = round(keys / elapsed, 0)
    out["rss_mb_after_writes"] = round(psutil.Process().memory_info().rss / 2**20, 1)
    state.db.close()
    began = time.perf_counter()
    state = SqlStageState(open_state_database(path), "accept", 1)
    checkpoints = [state.checkpoint(tp) for tp in tps]
    restored = time.perf_counter() - began
    probe = [_key(i).decode() for i in range(keys - 1, max(keys - 1 - batch, -1), -1)]
    found = sum(len(state.get(tp, probe)) for tp in tps)
    out["restore_open_and_checkpoints_s"] = round(restored, 4)
    out["restore_to_first_batch_judged_s"] = round(time.perf_counter() - began, 4)
    out["restored_positions"] = sum(c.position for c in checkpoints if c)
    out["probe_found"] = found
    out["entries"] = sum(state.size(tp) for tp in tps)
    state.db.close()
    out["file_mb"] = _du_mb(work)
    out["rss_mb"] = round(psutil.Process().memory_info().rss / 2**20, 1)
    shutil.rmtree(work)
    return out


def main(kind: str, keys: int, parts: list[str], kill_keys: int, stores: list[str]) -> None:
    from adapters.kafka.apache_kafka import KAFKA_VERSION, KafkaCluster
    from adapters.kafka.embedded import EmbeddedBroker

    if "sqlite" in parts:
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.faust_tables", "--sqlite-child", "--keys", str(keys)],
            capture_output=True,
            text=True,
            check=True,
        )
        print(child.stdout.strip(), flush=True)
    if not {"tables", "kill"} & set(parts):
        return
    work = Path(tempfile.mkdtemp(prefix="faust-tables-"))
    cache = Path(os.environ.get("TIPHUB_KAFKA_CACHE", Path(__file__).resolve().parents[1] / "build" / "kafka"))
    broker = (
        KafkaCluster(work / "kafka", 1, cache=cache) if kind == "kafka" else EmbeddedBroker(work / "broker")
    ).start()
    name = f"Apache Kafka {KAFKA_VERSION}, one node" if kind == "kafka" else "noida-db"
    try:
        if "tables" in parts:
            for store in stores:
                result = tables(broker.bootstrap, broker.pids, work, keys, store)
                print(json.dumps({"broker": name, **result}), flush=True)
        if "kill" in parts:
            for store in ("rocksdb", "memory"):
                for guarantee in ("exactly_once", "at_least_once"):
                    result = kill(broker.bootstrap, work, kill_keys, guarantee, store)
                    print(json.dumps({"broker": name, **result}), flush=True)
    finally:
        broker.stop()
        print(json.dumps({"work": str(work)}), flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--broker-kind", choices=["noida", "kafka"], default="kafka")
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--kill-keys", type=int, default=10_000, help="records of the SIGKILL runs")
    parser.add_argument("--parts", default="sqlite,tables,kill", help="of sqlite, tables, kill")
    parser.add_argument("--stores", default="rocksdb,memory,dict", help="of rocksdb, memory, dict (part tables)")
    parser.add_argument("--sqlite-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sqlite_child:
        print(json.dumps(sqlite(args.keys)))
    else:
        main(args.broker_kind, args.keys, args.parts.split(","), args.kill_keys, args.stores.split(","))
