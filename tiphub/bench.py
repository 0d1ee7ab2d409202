"""`tiphub bench`: the whole pipeline measured end to end, beside two ceilings taken in the same run.

Phases, each on the same broker and topics (a fresh topic prefix per run):
1. prepare: simulated reports, sealed and signed as agencies would (not timed as hub work);
2. warm-up: the workers join their groups and restore state on a few reports;
3. burst: every prepared report published as fast as the client can: `accepted_per_s`;
4. steady: a fixed rate for a fixed time: latency publish -> accepted and publish -> signal;
5. ceilings: a bare consume-and-produce loop over the same submitted records
   (`passthrough_per_s`), and Avro decode+encode of the same records in one process
   (`inprocess_ceiling_per_s`).
CPU seconds and peak RSS are read per process, the broker's included (embedded broker only).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from adapters.kafka.apache_kafka import KAFKA_VERSION
from adapters.kafka.embedded import EmbeddedBroker, ensure_topics
from adapters.kafka.probes import CommittedReader
from adapters.kafka.probes import LagProbe as KafkaLagProbe
from adapters.kafka.probes import passthrough as client_passthrough
from adapters.kafka.producer import Producer
from domain.log import TopicSpec
from domain.scoped import HUB_SCOPE
from producers.simulate import Simulator
from schemas.codec import WireCodec
from schemas.envelope import SUBMITTED
from streams.stages import group_id, stage_inputs
from tiphub.hub import spawn_tiphub, stop_process
from tiphub.runtime import LocalBroker, connect_broker, init_keys, new_producer, publishers_for, topics_for
from tiphub.settings import Settings

SIGNAL = "tiphub.Signal"


@dataclass(frozen=True)
class BenchConfig:
    reports: int = 10_000  # published in the burst phase
    rate: float = 250.0  # reports per second in the steady phase (below saturation on 2 cores)
    seconds: float = 30.0  # length of the steady phase
    workers: int = 1
    partitions: int = 6
    warmup: int = 200
    seed: int = 11
    ctdc: Path | None = None
    timeout_s: float = 600.0  # for the pipeline to catch up after a phase


@dataclass
class Observed:
    """When the bench's consumer saw each report accepted, and first in a signal."""

    accepted_at: dict[str, float] = field(default_factory=dict)
    signal_at: dict[str, float] = field(default_factory=dict)
    signal_times: list[float] = field(default_factory=list)  # one per signal version
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count


# -- preparing the workload ----------------------------------------------------------------
def simulated_reports(count: int, seed: int, ctdc: Path | None) -> list[dict[str, Any]]:
    """Whole simulated cases, split across agencies, until `count` reports."""
    simulator = Simulator(seed, ctdc, keep_truth=False)
    reports: list[dict[str, Any]] = []
    for index in itertools.count():
        reports.extend(simulator.case(index).reports)
        if len(reports) >= count:
            return reports[:count]
    raise AssertionError("unreachable")


def _seal_chunk(home: str, bootstrap: str, reports: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """In a pool process: each report sealed and signed by its agency's demo key."""
    settings = Settings(home=Path(home))
    publishers = publishers_for(settings, bootstrap, None, sorted({r["source_agency"] for r in reports}))
    return [publishers[r["source_agency"]].prepare(r) for r in reports]


def prepare(
    settings: Settings, bootstrap: str, reports: list[dict[str, Any]], progress: Progress
) -> list[tuple[str, bytes]]:
    """Sealed submissions in publishing order: (report_id, Kafka value)."""
    task = progress.add_task("sealing and signing (agency side)", total=len(reports))
    chunks = [reports[i : i + 500] for i in range(0, len(reports), 500)]
    items: list[tuple[str, bytes]] = []
    # spawn, not fork: the progress display runs a thread, and a forked copy of a lock it holds never opens.
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1, mp_context=multiprocessing.get_context("spawn")) as pool:
        for sealed in pool.map(_seal_chunk, itertools.repeat(str(settings.home)), itertools.repeat(bootstrap), chunks):
            items.extend(sealed)
            progress.advance(task, len(sealed))
    return items


# -- processes ------------------------------------------------------------------------------
class ProcessMeter:
    """CPU seconds between two readings, and peak resident memory, of named processes."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.start: dict[str, float] = {}
        self.marked_at = time.monotonic()
        self.peak_rss: dict[str, int] = dict.fromkeys(pids, 0)

    def _cpu(self, process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    def mark(self) -> None:
        self.start = {name: self._cpu(p) for name, p in self.processes.items()}
        self.marked_at = time.monotonic()

    def sample(self) -> None:
        for name, process in self.processes.items():
            with contextlib.suppress(psutil.Error):
                self.peak_rss[name] = max(self.peak_rss[name], process.memory_info().rss, _high_water_mark(process))

    def report(self) -> tuple[dict[str, dict[str, float]], float]:
        """Per process: CPU seconds since mark() and peak RSS; and the seconds since mark()."""
        self.sample()
        out = {}
        for name, process in self.processes.items():
            try:
                cpu = self._cpu(process) - self.start.get(name, 0.0)
            except psutil.Error:
                cpu = float("nan")
            out[name] = {"cpu_s": round(cpu, 2), "peak_rss_mb": round(self.peak_rss[name] / 2**20, 1)}
        return out, time.monotonic() - self.marked_at


def _high_water_mark(process: psutil.Process) -> int:
    """Peak RSS as the kernel counted it (Linux VmHWM); 0 where /proc has no such line."""
    try:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _spawn_worker(settings: Settings, bootstrap: str, instance: int, logs: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TIPHUB_HOME": str(settings.home),
        "TIPHUB_BROKER": bootstrap,
        "TIPHUB_TOPIC_PREFIX": settings.topic_prefix,
        "TIPHUB_PARTITIONS": str(settings.partitions),
        **({"TIPHUB_BROKER_KIND": settings.broker_kind} if settings.broker_kind else {}),
    }
    return spawn_tiphub(["worker", "--instance-id", str(instance)], env, logs / f"bench-worker-{instance}.log")


# -- observing the pipeline's outputs ---------------------------------------------------------
async def observe(settings: Settings, bootstrap: str, observed: Observed, stop: asyncio.Event) -> None:
    """Read accepted reports, rejections and signals as they commit, and time them."""
    topics = topics_for(settings)
    codec = WireCodec()
    reader = CommittedReader(
        bootstrap,
        [topics.accepted, topics.rejected, topics.signals],
        settings.kafka_options(),
        max_partition_fetch_bytes=8 << 20,
    )
    async with reader:
        while not stop.is_set():
            batch = await reader.batch(timeout_ms=20, max_records=5000)
            now = time.monotonic()
            for topic, records in batch:
                if topic == topics.accepted:
                    for record in records:
                        assert record.key is not None
                        observed.accepted_at.setdefault(record.key.decode(), now)
                elif topic == topics.signals:
                    for record in records:
                        signal = codec.decode(record.value)[1]
                        if signal["scope"] != HUB_SCOPE:
                            continue  # the agencies' and partners' own signals are subsets of the hub's
                        observed.signal_times.append(now)
                        for report_id in signal["report_ids"]:
                            observed.signal_at.setdefault(report_id, now)
                else:
                    for record in records:
                        reason = codec.decode(record.value)[1]["reason"]
                        observed.rejected[reason] = observed.rejected.get(reason, 0) + 1


class LagProbe:
    """Records each stage's consumer group has not committed yet, over one admin client and consumer."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings = settings
        self.probe = KafkaLagProbe(bootstrap, settings.kafka_options())

    async def __aenter__(self) -> LagProbe:
        await self.probe.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.probe.stop()

    async def lags(self) -> dict[str, int]:
        inputs = stage_inputs(topics_for(self.settings))
        return await self.probe.stage_lags(inputs, lambda stage: group_id(self.settings, stage))

    async def quiet(self) -> bool:
        return not any((await self.lags()).values())

    async def appended(self) -> int:
        """Offsets taken on all the hub's topics so far: records plus transaction markers."""
        return await self.probe.appended(topics_for(self.settings).specs())


async def wait_until(
    condition: Any, limit_s: float, what: str, meter: ProcessMeter | None = None, poll: float = 0.05
) -> None:
    deadline = time.monotonic() + limit_s
    while not await condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {limit_s:.0f}s waiting for {what}")
        if meter is not None:
            meter.sample()
        await asyncio.sleep(poll)


class BenchError(RuntimeError):
    pass


# -- the phases ----------------------------------------------------------------------------
async def publish_burst(producer: Producer, topic: str, items: list[tuple[str, bytes]]) -> dict[str, float]:
    """As fast as the client goes. Returns each report's publish time."""
    sent_at: dict[str, float] = {}
    futures = []
    for report_id, value in items:
        sent_at[report_id] = time.monotonic()
        futures.append(await producer.send(topic, key=report_id.encode(), value=value))
    await asyncio.gather(*futures)
    return sent_at


async def publish_steady(
    producer: Producer, topic: str, items: list[tuple[str, bytes]], rate: float, progress: Progress, task: Any
) -> dict[str, float]:
    """`rate` reports per second, paced against the clock (not against the previous send)."""
    sent_at: dict[str, float] = {}
    futures = []
    start = time.monotonic()
    queue = iter(items)
    sent = 0
    while sent < len(items):
        due = min(len(items), int((time.monotonic() - start) * rate) + 1)
        for report_id, value in itertools.islice(queue, due - sent):
            sent_at[report_id] = time.monotonic()
            futures.append(await producer.send(topic, key=report_id.encode(), value=value))
        progress.update(task, completed=due)
        sent = due
        await asyncio.sleep(0.002)
    await asyncio.gather(*futures)
    return sent_at


def percentiles(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50": None, "p95": None, "p99": None, "max": None, "count": 0}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": at(1.0), "count": len(ordered)}


def latencies(sent_at: dict[str, float], seen_at: dict[str, float]) -> list[float]:
    return [seen_at[i] - t for i, t in sent_at.items() if i in seen_at]


async def passthrough(settings: Settings, bootstrap: str, source: str, count: int) -> float:
    """Messages per second of a bare aiokafka consume -> produce loop over `source`, by the same clients
    (adapters/kafka/probes.py)."""
    sink = f"{settings.topic_prefix}bench.passthrough"
    ensure_topics(bootstrap, [TopicSpec(sink, settings.partitions, 3_600_000)], 1, **settings.kafka_options())
    return await client_passthrough(bootstrap, source, sink, settings.partitions, count, settings.kafka_options())


def inprocess_ceiling(values: list[bytes], minimum_s: float = 2.0) -> float:
    """Reports per second one process decodes and re-encodes (Avro, the hub's codec, no crypto)."""
    codec = WireCodec()
    schema = codec.registry.latest(SUBMITTED)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < minimum_s:
        for value in values:
            codec.encode_with(schema, codec.decode(value, expect=SUBMITTED)[1])
        done += len(values)
    return done / (time.perf_counter() - start)


@contextlib.contextmanager
def bench_home(home: Path | None) -> Iterator[Path]:
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        yield home
        return
    with tempfile.TemporaryDirectory(prefix="tiphub-bench-") as tmp:
        yield Path(tmp)


def broker_name(settings: Settings, bootstrap: str, owned: LocalBroker | None) -> str:
    """Which broker a run measured: printed with its results, so numbers are never read for another."""
    if isinstance(owned, EmbeddedBroker):
        return "noida-db (embedded, one process)"
    if owned is not None:
        return f"Apache Kafka {KAFKA_VERSION} (local, {len(owned.pids)} node(s))"
    kind = "Apache Kafka" if settings.broker_kind == "kafka" else "noida-db"
    return f"{kind} at {bootstrap}"


def run_bench(
    config: BenchConfig, broker: str | None, home: Path | None, console: Console, kind: str | None = None
) -> dict[str, Any]:
    """With `broker`: on that Kafka (its kind `kind`, or asked). Without: on a local broker of `kind`
    (noida-db by default, or one Apache Kafka node) started and stopped here."""
    with bench_broker(home, broker, kind, "bench", config.partitions, console) as (settings, bootstrap, owned):
        return asyncio.run(_run(settings, bootstrap, config, owned, console))


@contextlib.contextmanager
def bench_broker(
    home: Path | None, broker: str | None, kind: str | None, name: str, partitions: int, console: Console
) -> Iterator[tuple[Settings, str, LocalBroker | None]]:
    """A bench's home (fresh unless given) with keys, topics under a fresh prefix `name-...`, and its broker:
    `broker`, or a local one of `kind` started here and stopped on the way out. (settings, bootstrap, the
    local broker if one was started.)"""
    if kind not in (None, "noida", "kafka"):
        raise BenchError(f"--broker-kind {kind!r}: one of noida, kafka")
    with bench_home(home) as path:
        copy_kafka_classpath(path)
        settings = Settings(
            home=path.resolve(),
            broker=broker,
            broker_kind=kind,  # type: ignore[arg-type]  # checked above
            topic_prefix=f"{name}-{uuid.uuid4().hex[:8]}.",
            partitions=partitions,
        )
        init_keys(settings)
        connection = connect_broker(settings, progress=console.print)  # a fresh home: a local broker is started
        owned = connection.started
        try:
            yield settings.model_copy(update={"broker_kind": connection.quirks.kind}), connection.bootstrap, owned
        finally:
            if owned is not None:
                owned.stop()


def copy_kafka_classpath(home: Path) -> None:
    """The pinned Apache Kafka's classpath listing, resolved once per machine (TIPHUB_KAFKA_CACHE, else
    build/kafka), so that a fresh home does not ask Maven again."""
    cache = Path(os.environ.get("TIPHUB_KAFKA_CACHE", "build/kafka"))
    home.mkdir(parents=True, exist_ok=True)
    for listing in cache.glob("kafka-*.classpath") if cache.is_dir() else ():
        if not (home / listing.name).exists():
            shutil.copyfile(listing, home / listing.name)


async def _run(
    settings: Settings, bootstrap: str, config: BenchConfig, owned: LocalBroker | None, console: Console
) -> dict[str, Any]:
    topics = topics_for(settings)
    steady_count = int(config.rate * config.seconds)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    logs = settings.home / "logs"
    logs.mkdir(exist_ok=True)
    workers: list[subprocess.Popen[bytes]] = []
    observed, stop = Observed(), asyncio.Event()
    with Progress(*columns, console=console, transient=False) as progress:
        reports = simulated_reports(config.warmup + config.reports + steady_count, config.seed, config.ctdc)
        prepared = prepare(settings, bootstrap, reports, progress)
        warmup, burst, steady = (
            prepared[: config.warmup],
            prepared[config.warmup : config.warmup + config.reports],
            prepared[config.warmup + config.reports :],
        )
        workers = [_spawn_worker(settings, bootstrap, i, logs) for i in range(config.workers)]
        pids = {f"worker-{i}": w.pid for i, w in enumerate(workers)} | {"bench": os.getpid()}
        if owned is not None and owned.pids:
            pids["broker"] = owned.pids[0]
        meter = ProcessMeter(pids)
        watcher = asyncio.create_task(observe(settings, bootstrap, observed, stop))
        producer = new_producer(bootstrap, settings.kafka_options())
        await producer.start()
        try:
            async with LagProbe(settings, bootstrap) as probe:

                async def outcomes(target: int, task: Any = None) -> bool:
                    """Phases run one after another, so cumulative outcomes say when one is through."""
                    for i, worker in enumerate(workers):
                        if worker.poll() is not None:
                            tail = (logs / f"bench-worker-{i}.log").read_text(errors="replace").splitlines()[-15:]
                            raise BenchError(
                                f"worker {i} exited with {worker.returncode}; its log ends:\n" + "\n".join(tail)
                            )
                    done = len(observed.accepted_at) + sum(observed.rejected.values())
                    if task is not None:
                        progress.update(task, completed=done - (target - progress.tasks[task].total))
                    return done >= target

                task = progress.add_task("warm-up (workers join, restore)", total=len(warmup))
                await publish_burst(producer, topics.submitted, warmup)
                await wait_until(lambda: outcomes(len(warmup), task), config.timeout_s, "the warm-up reports")
                await wait_until(probe.quiet, config.timeout_s, "the stages to settle after warm-up", poll=0.5)

                meter.mark()
                appended_before = await probe.appended()
                task = progress.add_task("burst: publish as fast as possible", total=len(burst))
                burst_start = time.monotonic()
                burst_sent = await publish_burst(producer, topics.submitted, burst)
                published_s = time.monotonic() - burst_start
                target = len(warmup) + len(burst)
                await wait_until(lambda: outcomes(target, task), config.timeout_s, "the burst", meter, poll=0.2)
                burst_accepted_s = max(observed.accepted_at.get(i, 0.0) for i in burst_sent) - burst_start
                await wait_until(probe.quiet, config.timeout_s, "every stage to catch up", meter, poll=0.5)
                burst_signals = [t for t in observed.signal_times if t >= burst_start]
                burst_signal_s = (max(burst_signals) - burst_start) if burst_signals else float("nan")

                task = progress.add_task(f"steady: {config.rate:.0f}/s for {config.seconds:.0f}s", total=len(steady))
                steady_start = time.monotonic()
                steady_sent = await publish_steady(producer, topics.submitted, steady, config.rate, progress, task)
                steady_publish_s = time.monotonic() - steady_start
                target += len(steady)
                await wait_until(lambda: outcomes(target), config.timeout_s, "the steady reports", meter, poll=0.2)
                await wait_until(probe.quiet, config.timeout_s, "every stage to catch up", meter, poll=0.5)
                await asyncio.sleep(0.5)  # signals committed with the last batch reach the observer
                processes, measured_s = meter.report()
                lag_at_end = await probe.lags()
                appended = await probe.appended() - appended_before
        finally:
            stop.set()
            await producer.stop()
            await asyncio.gather(watcher, return_exceptions=True)
            for worker in workers:
                stop_process(worker, 30.0)

        task = progress.add_task("ceilings: bare consume->produce, in-process Avro", total=2)
        passthrough_per_s = await passthrough(settings, bootstrap, topics.submitted, len(prepared))
        progress.advance(task)
        inprocess_per_s = inprocess_ceiling([value for _, value in burst[:5000]])
        progress.advance(task)

    burst_accepted = sum(1 for i in burst_sent if i in observed.accepted_at)
    accepted_per_s = burst_accepted / burst_accepted_s
    cpu_total = sum(p["cpu_s"] for p in processes.values())
    return {
        "tiphub_bench": 1,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "broker": broker_name(settings, bootstrap, owned),
        },
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "published": len(burst) + len(steady),
        "accepted": burst_accepted + sum(1 for i in steady_sent if i in observed.accepted_at),
        "rejected": observed.rejected,
        "accepted_per_s": round(accepted_per_s, 1),
        "publish_per_s": round(len(burst) / published_s, 1),
        "signals_per_s": round(len(burst_signals) / burst_signal_s, 1) if burst_signals else 0.0,
        "signal_versions": len(burst_signals),
        "reports_in_signals": sum(1 for i in burst_sent if i in observed.signal_at),
        "latency_ms": {
            "steady_rate_per_s": round(len(steady) / steady_publish_s, 1),
            "publish_to_accepted": percentiles(latencies(steady_sent, observed.accepted_at)),
            "publish_to_signal": percentiles(latencies(steady_sent, observed.signal_at)),
            "burst_publish_to_accepted": percentiles(latencies(burst_sent, observed.accepted_at)),
        },
        "lag_at_end": lag_at_end,
        # What one report costs the broker: its submission, and every record the stages write for it
        # (accepted, sightings, decisions per recipient, audit entries, links, signals), markers included.
        "offsets_per_report": round(appended / (len(burst) + len(steady)), 1),
        "processes": processes,
        # Share of the machine's cores the measured processes kept busy from burst start to quiet.
        "cpu_busy_fraction": round(cpu_total / (measured_s * (os.cpu_count() or 1)), 2),
        "passthrough_per_s": round(passthrough_per_s, 1),
        "inprocess_ceiling_per_s": round(inprocess_per_s, 1),
        "ratio_to_passthrough": round(accepted_per_s / passthrough_per_s, 3),
        "ratio_to_inprocess": round(accepted_per_s / inprocess_per_s, 3),
    }


def dumps(result: dict[str, Any]) -> str:
    return json.dumps(result, sort_keys=False)
