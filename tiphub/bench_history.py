"""`tiphub bench history`: restart times, peak memory and query latencies as the hub's history grows.

One history, grown through the real pipeline to each size in turn (10^4, then on to 10^5, ...):
simulated agencies seal and sign reports (in a process pool, just in time: the verify stage refuses
envelopes older than an hour) and publish them; real `tiphub worker` processes run every stage; each
size is reached when every stage's consumer-group lag is 0. Then, at each size:

1. the workers are stopped cleanly (SIGTERM) and started again, and a few new reports are published at
   once: `to_probe_accepted_s` is when the verify and accept stages have committed past them,
   `to_all_stages_restored_s` when every stage has (their lag is 0 again, so each has restored its state
   and processed the new reports);
2. a `tiphub gateway` is started (it is not running while the history is seeded, so this first start
   reads all that was written meanwhile: `gateway_after_downtime`), then stopped and started again (the
   restart, `gateway`), each polled: `to_ready_s` is the first 200 of /readyz, `to_first_signals_s` the
   first 200 of `GET /v1/signals` carrying the history's first signal, `to_serving_s` the later of the
   two, `to_caught_up_s` the first /readyz saying every topic is read;
3. at the first size only, summaries are drafted, approved and consented to through the API (the release
   workflow of docs/gateway.md), so that a partner's pull returns something;
4. timed requests, one at a time over one keep-alive connection: a page of signals (cursor paging from
   the feed's start), a signal's detail, a partner's pull, and an auditor's who-saw query for one person;
   p50/p99 per kind. Each kind stops at `--requests` or after `--query-budget-s`, whichever is first.

Peak RSS is the kernel's high-water mark (VmHWM) of each process: the restarted worker(s) and the gateway
over the restart and the queries, and the workers over the seeding. Everything goes through the public
interfaces (the CLI's processes, HTTP, the topics' consumer-group lag), so the same harness measures the
tree before and after a change of the views or the restore.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import multiprocessing
import os
import platform
import random
import subprocess
import sys
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from adapters.kafka.embedded import free_port
from adapters.kafka.probes import CommittedReader
from adapters.kafka.producer import Producer
from producers.simulate import Simulator
from schemas.codec import WireCodec
from tiphub.bench import BenchError, LagProbe, ProcessMeter, bench_broker, broker_name, percentiles
from tiphub.hub import spawn_tiphub, stop_process
from tiphub.runtime import (
    LocalBroker,
    new_producer,
    publishers_for,
    token_authority,
    topics_for,
)
from tiphub.settings import Settings

SEEDED_HOW = (
    "through the real pipeline: simulated agencies seal and sign reports (process pool, just in time) and "
    "publish them to the submitted topic; tiphub worker processes run every stage; a size is reached when "
    "every stage's consumer-group lag is 0. The gateway is not running while the history is seeded."
)
QUERY_KINDS = ("signal_page", "signal_detail", "partner_pull", "who_saw")


@dataclass(frozen=True)
class HistoryConfig:
    sizes: tuple[int, ...] = (10_000,)
    workers: int = 1
    partitions: int = 6
    requests: int = 200  # per kind of query and size
    query_budget_s: float = 120.0  # per kind of query and size
    page_limit: int = 50
    releases: int = 3  # summaries released to the partner at the first size
    partner: str = "HSU-TH"
    agency: str = "NZ-NIC"  # whose analysts page and read signals
    probe_reports: int = 5  # published right after a worker restart
    seed: int = 11
    ctdc: Path | None = None
    chunk: int = 1000  # reports sealed per pool task
    sealers: int = 1  # sealing processes (the agencies' side, on the same cores)
    ahead: int = 20_000  # offsets the verify and accept stages may lag behind before publishing waits
    restart_limit_s: float = 300.0
    timeout_s: float = 6 * 3600.0  # for a size to be seeded


# -- the workload, continued across sizes ----------------------------------------------------
class ReportSource:
    """Simulated cases, case after case, so each size continues the same history."""

    def __init__(self, seed: int, ctdc: Path | None) -> None:
        self.simulator = Simulator(seed, ctdc, keep_truth=False)
        self.next_case = 0
        self.buffer: list[dict[str, Any]] = []

    def take(self, count: int) -> list[dict[str, Any]]:
        while len(self.buffer) < count:
            self.buffer.extend(self.simulator.case(self.next_case).reports)
            self.next_case += 1
        out, self.buffer = self.buffer[:count], self.buffer[count:]
        return out


def seal_chunk(home: str, bootstrap: str, reports: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """In a pool process: each report sealed and signed by its agency's demo key."""
    settings = Settings(home=Path(home))
    publishers = publishers_for(settings, bootstrap, None, sorted({r["source_agency"] for r in reports}))
    return [publishers[r["source_agency"]].prepare(r) for r in reports]


# -- HTTP, one keep-alive connection ----------------------------------------------------------
class Http:
    def __init__(self, port: int, timeout_s: float = 120.0) -> None:
        self.port, self.timeout_s = port, timeout_s
        self.connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, bytes, float]:
        """(status, body, seconds from sending to the whole answer read). Reconnects once on a closed socket."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout_s)
            try:
                start = time.perf_counter()
                self.connection.request(method, path, body=payload, headers=headers)
                response = self.connection.getresponse()
                data = response.read()
                return response.status, data, time.perf_counter() - start
            except (ConnectionError, http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str, token: str | None = None) -> tuple[int, bytes, float]:
        return self.request("GET", path, token)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


# -- the run ------------------------------------------------------------------------------------
@dataclass
class History:
    settings: Settings
    bootstrap: str
    config: HistoryConfig
    console: Console
    progress: Progress
    owned: LocalBroker | None
    producer: Producer
    probe: LagProbe
    pool: ProcessPoolExecutor
    source: ReportSource
    logs: Path
    published: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    gateway: subprocess.Popen[bytes] | None = None
    port: int = 0
    tokens: dict[str, str] = field(default_factory=dict)
    first_signal: str | None = None  # the first signal of the analysts' feed: a restarted gateway must show it
    who_saw_token: str | None = None
    released: list[str] = field(default_factory=list)

    # processes
    def env(self, **more: str) -> dict[str, str]:
        settings = self.settings
        return {
            **os.environ,
            "TIPHUB_HOME": str(settings.home),
            "TIPHUB_BROKER": self.bootstrap,
            "TIPHUB_TOPIC_PREFIX": settings.topic_prefix,
            "TIPHUB_PARTITIONS": str(settings.partitions),
            **({"TIPHUB_BROKER_KIND": settings.broker_kind} if settings.broker_kind else {}),
            **more,
        }

    def start_workers(self) -> None:
        self.workers = [
            spawn_tiphub(["worker", "--instance-id", str(i)], self.env(), self.logs / f"worker-{i}.log")
            for i in range(self.config.workers)
        ]

    def stop_workers(self) -> None:
        for worker in self.workers:
            stop_process(worker, 60.0)
        self.workers = []

    def check_alive(self) -> None:
        for i, worker in enumerate(self.workers):
            if worker.poll() is not None:
                raise BenchError(
                    f"worker {i} exited with {worker.returncode}; its log ends:\n{self.tail(f'worker-{i}')}"
                )
        if self.gateway is not None and self.gateway.poll() is not None:
            raise BenchError(
                f"the gateway exited with {self.gateway.returncode}; its log ends:\n{self.tail('gateway')}"
            )

    def tail(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-15:]) if path.exists() else ""

    def pids(self) -> dict[str, int]:
        pids = {f"worker-{i}": w.pid for i, w in enumerate(self.workers)}
        if self.gateway is not None:
            pids["gateway"] = self.gateway.pid
        if self.owned is not None and self.owned.pids:
            pids["broker"] = self.owned.pids[0]
        return pids

    # publishing
    async def publish(self, items: list[tuple[str, bytes]]) -> None:
        topic = topics_for(self.settings).submitted
        futures = [await self.producer.send(topic, key=rid.encode(), value=value) for rid, value in items]
        await asyncio.gather(*futures)
        self.published += len(items)

    def seal(self, reports: list[dict[str, Any]]) -> Future[list[tuple[str, bytes]]]:
        return self.pool.submit(seal_chunk, str(self.settings.home), self.bootstrap, reports)

    async def lags(self) -> dict[str, int]:
        """Each stage's lag. A fresh broker has no group coordinator until its offsets topic exists, and a
        restarting one none for a moment: that is waited for, up to a minute."""
        deadline = time.monotonic() + 60.0
        while True:
            try:
                return await self.probe.lags()
            except Exception as exc:  # the client's errors are the adapter's (aiokafka stays in adapters/kafka)
                if time.monotonic() > deadline:
                    raise BenchError(f"the stages' lag could not be read: {exc!r}") from exc
                await asyncio.sleep(0.5)


async def watch_rejections(history: History, stop: asyncio.Event) -> None:
    """Count what the hub rejects (the topic is small; accepted reports are not read)."""
    codec = WireCodec()
    reader = CommittedReader(
        history.bootstrap, [topics_for(history.settings).rejected], history.settings.kafka_options()
    )
    async with reader:
        while not stop.is_set():
            for _, records in await reader.batch(timeout_ms=200):
                for record in records:
                    reason = codec.decode(record.value)[1]["reason"]
                    history.rejected[reason] = history.rejected.get(reason, 0) + 1


async def seed_to(history: History, target: int) -> dict[str, Any]:
    """Publish until `target` reports are in the history, then wait until every stage's lag is 0."""
    config, progress = history.config, history.progress
    adding = target - history.published
    sizes = [min(config.chunk, adding - i) for i in range(0, adding, config.chunk)]
    task = progress.add_task(f"seeding to {target:,} (verify+accept through)", total=adding)
    settle = progress.add_task(f"seeding to {target:,}: every stage's lag to 0", total=None, visible=False)
    start, published_at_start = time.monotonic(), history.published
    pending: deque[Future[list[tuple[str, bytes]]]] = deque()
    queued = iter(sizes)
    first_stage_through_s: float | None = None

    def refill() -> None:
        while len(pending) < 2:
            count = next(queued, None)
            if count is None:
                return
            pending.append(history.seal(history.source.take(count)))

    refill()
    while pending:
        sealed = await asyncio.wrap_future(pending.popleft())
        refill()
        while True:  # bounded ahead of the front stages: memory and envelope age stay small
            history.check_alive()
            lags = await history.lags()
            front = lags.get("verify", 0) + lags.get("accept", 0)
            progress.update(task, completed=max(0, history.published - published_at_start - front))
            if front <= config.ahead:
                break
            await asyncio.sleep(0.5)
        await history.publish(sealed)
    published_s = time.monotonic() - start
    while True:
        history.check_alive()
        lags = await history.lags()
        front = lags.get("verify", 0) + lags.get("accept", 0)
        progress.update(task, completed=max(0, adding - front))
        if front == 0 and first_stage_through_s is None:
            first_stage_through_s = time.monotonic() - start
            progress.update(settle, visible=True)
        if first_stage_through_s is not None:
            progress.update(settle, description=f"seeding to {target:,}: lag to 0, now {sum(lags.values()):,}")
            if not any(lags.values()):
                break
        if time.monotonic() - start > config.timeout_s:
            raise BenchError(f"seeding to {target} took over {config.timeout_s:.0f}s; lags {lags}")
        await asyncio.sleep(1.0)
    quiet_s = time.monotonic() - start
    progress.update(settle, visible=False)
    progress.update(task, completed=adding)
    return {
        "reports_added": adding,
        "publish_s": round(published_s, 1),
        "verify_accept_through_s": round(first_stage_through_s or quiet_s, 1),
        "all_stages_quiet_s": round(quiet_s, 1),
        "accepted_per_s": round(adding / (first_stage_through_s or quiet_s), 1),
        "reports_per_s": round(adding / quiet_s, 1),
    }


async def restart_workers(history: History) -> dict[str, Any]:
    """Stop the workers cleanly, start them again and publish a few reports at once: how long until the
    front stages, and then every stage, are through them. A worker that exits meanwhile is started again at
    once, as a supervisor would (counted in `exits`, with the last line of its log); if they are not through
    within `restart_limit_s`, they are stopped and the result says so (`restored: false`): the gateway and
    the queries are then measured with no worker running."""
    stop_start = time.monotonic()
    history.stop_workers()
    stopped_s = time.monotonic() - stop_start
    probe = await asyncio.wrap_future(history.seal(history.source.take(history.config.probe_reports)))
    start = time.monotonic()
    history.start_workers()
    await history.publish(probe)
    accepted_s: float | None = None
    exits: list[dict[str, Any]] = []
    restored = True
    meter = ProcessMeter({f"worker-{i}": w.pid for i, w in enumerate(history.workers)})
    while True:
        meter.sample()
        for i, worker in enumerate(history.workers):
            if worker.poll() is not None:
                exits.append(
                    {
                        "worker": i,
                        "at_s": round(time.monotonic() - start, 1),
                        "code": worker.returncode,
                        "last_line": last_error(history.tail(f"worker-{i}")),
                    }
                )
                history.workers[i] = spawn_tiphub(
                    ["worker", "--instance-id", str(i)], history.env(), history.logs / f"worker-{i}.log"
                )
        lags = await history.lags()
        now = time.monotonic() - start
        if accepted_s is None and lags.get("verify", 0) == 0 and lags.get("accept", 0) == 0:
            accepted_s = now
        if not any(lags.values()):
            break
        if now > history.config.restart_limit_s:
            restored = False
            meter.sample()
            history.console.print(
                f"[red]the restarted workers were not through in {now:.0f}s[/red] ({len(exits)} exits; lags {lags})"
            )
            history.stop_workers()
            break
        await asyncio.sleep(0.05)
    return {
        "restored": restored,
        "stop_s": round(stopped_s, 2),
        "to_probe_accepted_s": round(accepted_s, 2) if accepted_s is not None else None,
        "to_all_stages_restored_s": round(now, 2) if restored else None,
        "exits": exits,
        # Each worker's high-water mark over its restore (of its first incarnation, if it exited).
        "peak_rss_mb": {k: round(v / 2**20, 1) for k, v in meter.peak_rss.items()},
        **({} if restored else {"lags_when_given_up": lags}),
    }


def last_error(log: str) -> str:
    """The line of a log tail that names the exception (a rich traceback ends with it)."""
    lines = [line.strip() for line in log.splitlines() if line.strip() and not line.startswith(("│", "╰", "╭"))]
    return lines[-1][:300] if lines else ""


def start_gateway(history: History) -> dict[str, Any]:
    """Start `tiphub gateway` and poll it: when /readyz first answers 200, when the analysts' feed first answers
    200 with the history's first signal, and when /readyz says every topic is read to its end."""
    if history.gateway is not None:
        stop_process(history.gateway, 60.0)
    history.port = free_port()
    start = time.monotonic()
    history.gateway = spawn_tiphub(
        ["gateway", "--port", str(history.port)],
        # The bench is one client sending many requests: the per-credential and per-address limits are off.
        history.env(TIPHUB_GATEWAY_RATE_PER_S="0", TIPHUB_GATEWAY_ADDRESS_RATE_PER_S="0"),
        history.logs / "gateway.log",
    )
    meter = ProcessMeter(history.pids())
    client = Http(history.port, timeout_s=history.config.restart_limit_s)
    token = history.tokens["analyst"]
    marks: dict[str, float | None] = {"to_ready_s": None, "to_first_signals_s": None, "to_caught_up_s": None}
    readyz = "unknown"
    page_path = f"/v1/signals?limit={history.config.page_limit}"
    try:
        while any(v is None for v in marks.values()):
            history.check_alive()
            meter.sample()
            now = time.monotonic() - start
            if now > history.config.restart_limit_s:
                raise BenchError(f"the gateway was not serving after {now:.0f}s: {marks}")
            try:
                if marks["to_ready_s"] is None or marks["to_caught_up_s"] is None:
                    status, body, _ = client.get("/readyz")
                    if status == 404:  # a tree without /readyz: readiness is the feed's answer alone
                        readyz = "absent"
                        marks["to_ready_s"] = marks["to_caught_up_s"] = -1.0
                    elif status == 200:
                        readyz = "present"
                        at = time.monotonic() - start
                        marks["to_ready_s"] = marks["to_ready_s"] or at
                        if json.loads(body).get("caught_up"):
                            marks["to_caught_up_s"] = at
                if marks["to_first_signals_s"] is None:
                    status, body, _ = client.get(page_path, token)
                    if status == 200:
                        signals = json.loads(body)["signals"]
                        if signals and (history.first_signal in (None, signals[0]["signal_id"])):
                            marks["to_first_signals_s"] = time.monotonic() - start
            except (ConnectionError, http.client.HTTPException, OSError):
                pass  # not listening yet
            time.sleep(0.05)
    finally:
        client.close()
    shown = {k: (None if v is None or v < 0 else round(v, 2)) for k, v in marks.items()}
    # Serving: the views say they are rebuilt (where /readyz exists) and the feed shows the history.
    serving = max(v for v in (shown["to_ready_s"], shown["to_first_signals_s"]) if v is not None)
    # The gateway's high-water mark once serving: what rebuilding its views from the topics took.
    at_serving = meter.report()[0]["gateway"]["peak_rss_mb"]
    return {**shown, "to_serving_s": serving, "readyz": readyz, "peak_rss_mb_when_serving": at_serving}


def issue_tokens(history: History) -> None:
    authority = token_authority(history.settings)
    config, ttl = history.config, 24 * 3600
    history.tokens = {
        "analyst": authority.issue("analyst", "bench analyst", agency=config.agency, ttl_s=ttl),
        "drafter": authority.issue("analyst", "bench drafter", agency=config.agency, ttl_s=ttl),
        "officer": authority.issue("releasing_officer", "bench officer", agency=config.agency, ttl_s=ttl),
        "liaison": authority.issue("liaison", "bench liaison", partner=config.partner, ttl_s=ttl),
        "auditor": authority.issue("auditor", "bench auditor", agency=config.agency, ttl_s=ttl),
    }


def release_summaries(history: History) -> list[str]:
    """Draft, approve and consent to summaries for the partner through the API, as tests/integration/test_gateway.py
    does; returns the released summary ids."""
    config = history.config
    client = Http(history.port)
    authority = token_authority(history.settings)
    try:
        status, body, _ = client.get(
            f"/v1/releasable?{urlencode({'partner': config.partner})}", history.tokens["drafter"]
        )
        if status != 200:
            raise BenchError(f"GET /v1/releasable answered {status}: {body[:300]!r}")
        released: list[str] = []
        for candidate in json.loads(body)["signals"]:
            if len(released) >= config.releases:
                break
            status, body, _ = client.request(
                "POST",
                "/v1/summaries",
                history.tokens["drafter"],
                {"partner": config.partner, "partner_signal": candidate["partner_signal"]},
            )
            if status != 201:
                continue  # changing under the stream, or nothing to release: the next one
            summary = json.loads(body)
            sid = summary["summary_id"]
            client.request("POST", f"/v1/summaries/{sid}/approve", history.tokens["officer"])
            for agency in summary["consents_required"]:
                consenting = authority.issue("releasing_officer", "bench consent", agency=agency, ttl_s=3600)
                client.request("POST", f"/v1/summaries/{sid}/consent", consenting)
            released.append(sid)
        return released
    finally:
        client.close()


def find_linkage_token(value: Any) -> str | None:
    if isinstance(value, dict):
        if isinstance(value.get("linkage_token"), str):
            return str(value["linkage_token"])
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = find_linkage_token(item)
            if found:
                return found
    return None


async def choose_who_saw_token(history: History) -> str:
    """A person of the analysts' first signal: from the signal's detail if it shows a linkage token, else from
    that report's accepted record (tip.reports.accepted, CONTRACT section 3), read from the beginning."""
    client = Http(history.port)
    try:
        _, body, _ = client.get(f"/v1/signals?limit={history.config.page_limit}", history.tokens["analyst"])
        signals = json.loads(body)["signals"]
        chosen = next((s for s in signals if s["requirement_id"] == "IR-1"), signals[0])
        _, body, _ = client.get(f"/v1/signals/{quote(chosen['signal_id'])}", history.tokens["analyst"])
        detail = json.loads(body)
    finally:
        client.close()
    found = find_linkage_token(detail.get("reports"))
    if found:
        return found
    wanted = set(chosen["report_ids"])
    codec = WireCodec()
    reader = CommittedReader(
        history.bootstrap, [topics_for(history.settings).accepted], history.settings.kafka_options()
    )
    deadline = time.monotonic() + 600
    async with reader:
        while time.monotonic() < deadline:
            for _, records in await reader.batch(timeout_ms=500):
                for record in records:
                    if record.key is None or record.key.decode() not in wanted:
                        continue
                    subjects = codec.decode(record.value)[1]["subjects"]
                    with_ids = [s for s in subjects if s["identifiers"]]
                    victims = [s for s in with_ids if s["role"] == "SUSPECTED_VICTIM"] or with_ids
                    if victims:
                        return str(victims[0]["identifiers"][0]["linkage_token"])
    raise BenchError("no person with an identifier in the first signal's reports")


def timed_queries(history: History) -> tuple[dict[str, Any], dict[str, Any]]:
    """p50/p99 of each kind of request, one at a time; and the signals' ids the pages named."""
    config = history.config
    meter = ProcessMeter(history.pids())
    client = Http(history.port)
    rng = random.Random(config.seed)  # noqa: S311  # which signals are read, not a secret
    out: dict[str, Any] = {}
    seen: list[str] = []

    def run(kind: str, next_path: Any, token: str, after: Any = None) -> None:
        samples: list[float] = []
        statuses: dict[str, int] = {}
        started = time.monotonic()
        for _ in range(config.requests):
            if time.monotonic() - started > config.query_budget_s:
                break
            status, body, seconds = client.get(next_path(), token)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == 200:
                samples.append(seconds)
                if after is not None:
                    after(json.loads(body))
            if len(samples) % 10 == 0:
                meter.sample()
        meter.sample()
        out[kind] = {
            **percentiles(samples),
            "statuses": statuses,
            "seconds": round(time.monotonic() - started, 1),
            # The gateway's high-water mark after this kind (the kinds run in this order): which one raised it.
            "gateway_peak_rss_mb_after": round(meter.peak_rss.get("gateway", 0) / 2**20, 1),
        }
        history.check_alive()

    cursor: list[str | None] = [None]
    wrapped = [0]

    def page_path() -> str:
        query = {"limit": config.page_limit, **({"after": cursor[0]} if cursor[0] else {})}
        return f"/v1/signals?{urlencode(query)}"

    def paged(body: dict[str, Any]) -> None:
        if body["signals"]:
            seen.extend(s["signal_id"] for s in body["signals"])
            cursor[0] = body["next"]
        else:  # the feed's end: from the start again
            cursor[0] = None
            wrapped[0] += 1

    try:
        run("signal_page", page_path, history.tokens["analyst"], paged)
        out["signal_page"]["feed_end_reached"] = wrapped[0]
        ids = sorted(set(seen))
        rng.shuffle(ids)
        details = iter(ids * (config.requests // max(1, len(ids)) + 1))
        run("signal_detail", lambda: f"/v1/signals/{quote(next(details))}", history.tokens["analyst"])
        pull = f"/v1/partners/{config.partner}/summaries?limit=100"
        run("partner_pull", lambda: pull, history.tokens["liaison"])
        token = history.who_saw_token or ""
        run("who_saw", lambda: f"/v1/audit/subjects/{quote(token)}", history.tokens["auditor"])
        status, body, _ = client.get(pull, history.tokens["liaison"])
        out["partner_pull"]["summaries_returned"] = len(json.loads(body)["summaries"]) if status == 200 else None
        status, body, _ = client.get(f"/v1/audit/subjects/{quote(token)}", history.tokens["auditor"])
        out["who_saw"]["seen_by_returned"] = len(json.loads(body)["seen_by"]) if status == 200 else None
    finally:
        client.close()
    processes, _ = meter.report()
    return out, processes


def verdicts(sizes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The issue's targets, against what was measured (None: not measured at the size the target names)."""
    if not sizes:
        return None
    # A worker restart that never got through counts as infinitely long.
    never = float("inf")
    restart = [
        max(s["restart"]["workers"]["to_all_stages_restored_s"] or never, s["restart"]["gateway"]["to_serving_s"])
        for s in sizes
    ]
    worst = round(max(restart), 2) if max(restart) < never else None
    at_million = next((s for s in sizes if s["reports"] >= 1_000_000), None)
    rss = None
    if at_million is not None:
        peaks = at_million["peak_rss_mb"]
        rss = all(v < 400 for k, v in peaks.items() if k.startswith(("worker", "gateway")))
    first, last = sizes[0], sizes[-1]
    ratios = {}
    for kind in QUERY_KINDS:
        a, b = first["queries"][kind], last["queries"][kind]
        ratios[kind] = {q: (round(b[q] / a[q], 2) if a.get(q) and b.get(q) else None) for q in ("p50", "p99")}
    latency_met = None
    if last["reports"] >= 1_000_000 and first["reports"] <= 10_000:
        latency_met = all(r["p50"] is not None and r["p50"] <= 1.5 for r in ratios.values())
    return {
        "restart_to_serving_within_5s": {"met": all(r <= 5.0 for r in restart), "worst_s": worst},
        "peak_rss_under_400mb_at_1e6": {"met": rss},
        "latency_at_largest_over_smallest": {
            "sizes": [first["reports"], last["reports"]],
            "ratios": ratios,
            "within_1_5x_at_1e6_vs_1e4": latency_met,
        },
    }


def run_history(
    config: HistoryConfig, broker: str | None, home: Path | None, console: Console, kind: str | None = "kafka"
) -> dict[str, Any]:
    """With `broker`: on that Kafka. Without: on a local broker of `kind` (Apache Kafka by default) started and
    stopped here, in a fresh home."""
    if sorted(config.sizes) != list(config.sizes) or len(set(config.sizes)) != len(config.sizes):
        raise BenchError("--reports: give the sizes in increasing order")
    # The Kafka client's warnings about a topic whose leader is still being elected are noise here.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    with bench_broker(home, broker, kind, "hist", config.partitions, console) as (settings, bootstrap, owned):
        return asyncio.run(_run(settings, bootstrap, config, owned, console))


def cli_start_s() -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "tiphub", "worker", "--help"], capture_output=True, check=False)
    return round(time.monotonic() - start, 2)


def load_average() -> float:
    """The machine's 1-minute load average: how much else ran on its cores."""
    return round(os.getloadavg()[0], 2)


async def measure_size(history: History, target: int, current: dict[str, Any], first: bool) -> None:
    """Grow the history to `target`, then restart the workers and the gateway and time the queries; fills
    `current` as it goes (so that a failure keeps what was measured before it)."""
    console = history.console
    current["phase"] = "seeding"
    if not history.workers:  # given up on at the last size's restart: try again
        history.start_workers()
    current["seeding"] = await seed_to(history, target)
    current["history_reports"] = history.published
    seeding_processes, _ = ProcessMeter(history.pids()).report()
    # CPU seconds since each process started; peak RSS over its life (the workers: since their last restart).
    current["seeding_processes"] = {k: v for k, v in seeding_processes.items() if k != "gateway"}
    seeding = current["seeding"]
    console.print(
        f"{target:,} reports: seeded at {seeding['reports_per_s']}/s to every stage quiet "
        f"({seeding['accepted_per_s']}/s through verify+accept)"
    )
    current["phase"] = "worker restart"
    current["load_avg_1m_at_restart"] = load_average()
    workers = await restart_workers(history)
    current["restart"] = {"workers": workers}
    current["phase"] = "gateway catching up"
    # The gateway is down while the history grows: its first start reads all that was written meanwhile
    # (a read-model store resumes from where it stood; a tree without one reads every topic whole). Then a
    # restart, the target's number: what a gateway stopped and started again on this history takes.
    current["restart"]["gateway_after_downtime"] = start_gateway(history)
    current["phase"] = "gateway restart"
    gateway = start_gateway(history)
    current["restart"]["gateway"] = gateway
    if first:
        current["phase"] = "releasing summaries"
        history.released = release_summaries(history)
        history.who_saw_token = await choose_who_saw_token(history)
    current["phase"] = "queries"
    queries, processes = timed_queries(history)
    if history.first_signal is None:
        client = Http(history.port)
        body = json.loads(client.get("/v1/signals?limit=1", history.tokens["analyst"])[1])
        client.close()
        history.first_signal = body["signals"][0]["signal_id"] if body["signals"] else None
    console.print(
        f"{target:,} reports: workers restored in {workers['to_all_stages_restored_s']}s "
        f"({len(workers['exits'])} exits), gateway "
        f"served in {gateway['to_serving_s']}s; p50 ms " + ", ".join(f"{k} {queries[k]['p50']}" for k in QUERY_KINDS)
    )
    current.update(
        {
            "peak_rss_mb": {k: v["peak_rss_mb"] for k, v in processes.items()},
            "processes": processes,
            "queries": queries,
            "load_avg_1m_at_end": load_average(),
        }
    )
    del current["phase"]
    if history.gateway is not None:  # not running while the history grows
        stop_process(history.gateway, 60.0)
        history.gateway = None


async def _run(
    settings: Settings, bootstrap: str, config: HistoryConfig, owned: LocalBroker | None, console: Console
) -> dict[str, Any]:
    logs = settings.home / "logs"
    logs.mkdir(exist_ok=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    producer = new_producer(bootstrap, settings.kafka_options())
    await producer.start()
    stop = asyncio.Event()
    sizes: list[dict[str, Any]] = []
    # spawn, not fork: the progress display runs a thread, and a forked copy of a lock it holds never opens.
    pool = ProcessPoolExecutor(max_workers=config.sealers, mp_context=multiprocessing.get_context("spawn"))
    history: History | None = None
    watcher: asyncio.Task[None] | None = None
    failure: dict[str, Any] | None = None
    started = time.monotonic()
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            async with LagProbe(settings, bootstrap) as probe:
                history = History(
                    settings, bootstrap, config, console, progress, owned, producer, probe, pool,
                    ReportSource(config.seed, config.ctdc), logs,
                )  # fmt: skip
                issue_tokens(history)
                watcher = asyncio.create_task(watch_rejections(history, stop))
                history.start_workers()
                for target in config.sizes:
                    current: dict[str, Any] = {"reports": target, "load_avg_1m_at_start": load_average()}
                    try:
                        await measure_size(history, target, current, first=not sizes)
                    except BenchError as exc:
                        # What was measured so far is kept: a worker that cannot restart is itself a result.
                        failure = {"reports": target, "phase": current.get("phase"), "error": str(exc)}
                        sizes.append(current)
                        break
                    sizes.append(current)
                lag_at_end = None if failure else await history.lags()
    finally:
        stop.set()
        if watcher is not None:
            await asyncio.gather(watcher, return_exceptions=True)
        if history is not None:
            if history.gateway is not None:
                stop_process(history.gateway, 60.0)
            history.stop_workers()
        await producer.stop()
        pool.shutdown(cancel_futures=True)
    assert history is not None
    return {
        "tiphub_bench_history": 1,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "broker": broker_name(settings, bootstrap, owned),
        },
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        # The floor under any restart: a Python process importing the CLI (`tiphub worker --help`).
        "cli_start_s": cli_start_s(),
        "seeded": SEEDED_HOW,
        "gateway_limits": "per-credential and per-address rate limits off (TIPHUB_GATEWAY_*RATE_PER_S=0)",
        "released_summaries": len(history.released),
        "who_saw_token": history.who_saw_token,
        "rejected": history.rejected,
        "lag_at_end": lag_at_end,
        "wall_s": round(time.monotonic() - started, 1),
        "sizes": sizes,
        "targets": verdicts([s for s in sizes if "queries" in s]),
        **({"failed": failure} if failure else {}),
    }
