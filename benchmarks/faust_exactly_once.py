"""Does faust-streaming's exactly_once hold under SIGKILL on this broker? (issue 2's first check)

Run: .venv/bin/python -m benchmarks.faust_exactly_once  [--messages N] [--broker-kind noida|kafka]
Starts its own broker of that kind (noida-db, or one Apache Kafka node: `make faust-check` runs both),
sends N keyed messages through a faust pass-through agent with
processing_guarantee="exactly_once", SIGKILLs the worker twice mid-stream, restarts it, and counts
duplicates and missing messages on the output topic read with read_committed. Prints one JSON object.
The tiphub stages use a transactional aiokafka loop instead; tests/integration kill them the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka.admin import NewTopic

from adapters.kafka.feeds import read_until

app = faust.App(
    "faust-eos-check",
    broker=f"kafka://{os.environ.get('EOS_BROKER', '127.0.0.1:9092')}",
    processing_guarantee="exactly_once",
    store="memory://",
    topic_partitions=3,
    consumer_group_instance_id="eos-check-0",
    broker_commit_interval=0.5,
    web_enabled=False,
    topic_allow_declare=False,
)
source = app.topic("eos.in", key_serializer="raw", value_serializer="raw", partitions=3)
sink = app.topic("eos.out", key_serializer="raw", value_serializer="raw", partitions=3)


@app.agent(source)
async def passthrough(stream):  # type: ignore[no-untyped-def]
    async for key, value in stream.items():
        await sink.send(key=key, value=value)


def _start_worker(broker: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "faust", "-A", "benchmarks.faust_exactly_once:app", "worker", "-l", "warn"],
            env={**os.environ, "EOS_BROKER": broker},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _count_output(broker: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition("eos.out", p) for p in range(3)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        return [r.key for r in await read_until(consumer, tps, await consumer.end_offsets(tps))]
    finally:
        await consumer.stop()


async def _produce(broker: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker, enable_idempotence=True)
    await producer.start()
    try:
        sends = [await producer.send("eos.in", key=f"k{i:06d}".encode(), value=b"x" * 200) for i in range(count)]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


def main(messages: int = 5000, kind: str = "noida") -> dict[str, object]:
    from adapters.kafka.apache_kafka import KAFKA_VERSION, KafkaCluster
    from adapters.kafka.embedded import EmbeddedBroker, admin_client

    work = Path(tempfile.mkdtemp(prefix="faust-eos-"))
    cache = Path(__file__).resolve().parents[1] / "build" / "kafka"
    broker = (
        KafkaCluster(work / "kafka", 1, cache=cache) if kind == "kafka" else EmbeddedBroker(work / "broker")
    ).start()
    try:
        admin = admin_client(broker.bootstrap)
        admin.create_topics([NewTopic("eos.in", 3, 1), NewTopic("eos.out", 3, 1)])
        admin.close()
        asyncio.run(_produce(broker.bootstrap, messages))
        log = work / "faust.log"
        worker = _start_worker(broker.bootstrap, log)
        kills = 0
        for fraction in (0.3, 0.7):
            deadline = time.monotonic() + 120
            while len(asyncio.run(_count_output(broker.bootstrap))) < messages * fraction:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            kills += 1
            worker = _start_worker(broker.bootstrap, log)
        deadline = time.monotonic() + 180
        keys = asyncio.run(_count_output(broker.bootstrap))
        while len(set(keys)) < messages and time.monotonic() < deadline:
            time.sleep(2)
            keys = asyncio.run(_count_output(broker.bootstrap))
        time.sleep(5)  # let a last in-flight transaction land, so a late duplicate is counted too
        keys = asyncio.run(_count_output(broker.bootstrap))
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        counts = Counter(keys)
        return {
            "broker": f"Apache Kafka {KAFKA_VERSION}, one node" if kind == "kafka" else "noida-db",
            "messages": messages,
            "sigkills": kills,
            "output_records": len(keys),
            "duplicates": sum(n - 1 for n in counts.values() if n > 1),
            "missing": messages - len(counts),
            "log": str(log),
        }
    finally:
        broker.stop()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--broker-kind", choices=["noida", "kafka"], default="noida")
    args = parser.parse_args()
    print(json.dumps(main(args.messages, args.broker_kind)))
