"""Run as a script: send records whose batch claims the broker stamped them (the LogAppendTime bit, which
a producer can set) with a time the sender chose. What a leaked key's holder can put on the wire.

stdin: JSON list of {"key": hex, "value": hex, "ts": ms}. argv: bootstrap, topic.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

os.environ["AIOKAFKA_NO_EXTENSIONS"] = "1"  # the pure-Python record builder, whose attributes can be changed

from aiokafka import AIOKafkaProducer
from aiokafka.record import default_records

LOG_APPEND_TIME_BIT = 0x08
_builder = default_records._DefaultRecordBatchBuilderPy
_attributes = _builder._get_attributes
_builder._get_attributes = lambda self, compression=True: _attributes(self, compression) | LOG_APPEND_TIME_BIT


async def send(bootstrap: str, topic: str, items: list[dict[str, object]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        for item in items:
            await producer.send_and_wait(
                topic,
                key=bytes.fromhex(str(item["key"])),
                value=bytes.fromhex(str(item["value"])),
                timestamp_ms=int(str(item["ts"])),
            )
    finally:
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(send(sys.argv[1], sys.argv[2], json.loads(sys.stdin.read())))
