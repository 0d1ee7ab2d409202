"""Micro-benchmarks of the per-report work: `make bench`. Not part of `make test`."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime

from domain import crypto
from domain.correlate import Correlator
from policies.engine import Decision, decide
from schemas.codec import WireCodec
from schemas.convert import report_from_json
from schemas.envelope import signing_bytes
from streams.accept import AcceptStage, Submission


def test_json_to_avro_conversion(benchmark, reports) -> None:  # type: ignore[no-untyped-def]
    cycle = itertools.cycle(reports)
    benchmark(lambda: report_from_json(next(cycle)))


def test_decode_submitted_envelope(benchmark, submissions) -> None:  # type: ignore[no-untyped-def]
    codec, cycle = WireCodec(), itertools.cycle(submissions)
    benchmark(lambda: codec.decode(next(cycle).value))


def test_signature_check(benchmark, submissions, home) -> None:  # type: ignore[no-untyped-def]
    from tiphub.keys import KeyStore

    _, envelope = WireCodec().decode(submissions[0].value)
    public = KeyStore(home).agency_key(envelope["source_agency"]).public_key()
    benchmark(lambda: crypto.verify(public, envelope["signature"], signing_bytes(envelope)))


def test_linkage_token(benchmark, stage: AcceptStage) -> None:
    benchmark(lambda: stage.linker.token("PASSPORT", "KH:N01234567"))


def test_name_dob_encoding(benchmark, stage: AcceptStage) -> None:
    benchmark(lambda: stage.linker.name_dob_encoding("Nguyen Thi Lan", "1999-04-02"))


def test_accept_stage_batch_of_100(benchmark, stage: AcceptStage, submissions: list[Submission]) -> None:
    """Whole accept step per batch (verify, open, validate, tokenise, vault keys, re-seal)."""
    batches = itertools.cycle([submissions[i : i + 100] for i in range(0, len(submissions), 100)])
    result = benchmark(lambda: stage.process(next(batches)))
    assert all(v.accepted is not None for v in result)


def test_encode_accepted_report(benchmark, accepted) -> None:  # type: ignore[no-untyped-def]
    codec, cycle = WireCodec(), itertools.cycle(accepted)
    schema = codec.registry.latest("tiphub.AcceptedReport")
    benchmark(lambda: codec.encode_with(schema, next(cycle)))


def test_policy_decisions_for_every_recipient(benchmark, accepted, agreements) -> None:  # type: ignore[no-untyped-def]
    """The pure engine: one accepted report judged for each recipient with an agreement."""
    cycle, recipients = itertools.cycle(accepted), agreements.recipients()

    def decide_all() -> list[Decision]:
        item = next(cycle)
        return [decide(item, r, agreements, item["accepted_at"], frozenset()) for r in recipients]

    decisions = benchmark(decide_all)
    assert len(decisions) == len(recipients) >= 5


def test_decide_stage_outputs_per_report(benchmark, accepted, agreements) -> None:  # type: ignore[no-untyped-def]
    """Decisions plus their records, audit events and encoding: the decide stage's work per report."""
    from streams.agents.decide_sharing import DECISION, decision_record
    from streams.audit_events import audit_event, audit_output

    codec, cycle, recipients = WireCodec(), itertools.cycle(accepted), agreements.recipients()
    now = datetime.now(UTC)

    def outputs() -> int:
        item = next(cycle)
        count = 0
        for recipient in recipients:
            decision = decide(item, recipient, agreements, item["accepted_at"], frozenset())
            codec.encode(DECISION, decision_record(decision, now))
            event = audit_event(
                "decision", "decide_sharing", decision.reason, item_id=decision.item_id, recipient=recipient, at=now
            )
            audit_output(codec, "tip.audit.intake", event)
            count += 2
        return count

    assert benchmark(outputs) == 2 * len(recipients)


def test_correlation_step_with_10k_known_reports(benchmark) -> None:  # type: ignore[no-untyped-def]
    """One report added to a correlator that already knows 10,000, and its entities' requirements evaluated."""
    from benchmarks.test_correlation import synthetic_report
    from tests.correlation_kit import PLAN

    rng, t0 = random.Random(3), datetime(2025, 1, 1, tzinfo=UTC)
    correlator = Correlator(PLAN)
    for i in range(10_000):
        correlator.add(synthetic_report(rng, i, t0))
    fresh = (synthetic_report(rng, 10**7 + n, t0) for n in itertools.count())

    def step() -> None:
        report = next(fresh)
        touched = correlator.add(report)
        correlator.evaluate_keys(correlator.affected(report.report_id, touched))

    benchmark(step)
