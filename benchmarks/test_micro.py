"""Micro-benchmarks of the per-report work: `make bench`. Not part of `make test`."""

from __future__ import annotations

import itertools

from schemas.codec import WireCodec
from schemas.convert import report_from_json
from schemas.envelope import signing_bytes
from streams.accept import AcceptStage, Submission
from tiphub import crypto


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
