"""Bad input of every kind is refused with its own reason; the good reports around it all pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from adapters.sql.database import Database
from adapters.sql.registry import KeyRegistry
from domain import crypto
from domain.signing import agency_key_id
from producers.publisher import FixedEntropy, seal_report
from schemas.convert import report_from_json
from streams.accept import UNVERIFIED
from tests.envelopes import EnvelopeKit, hours_ago, stranger_hub_key
from tests.factories import make_report
from tests.harness import Hub

pytestmark = pytest.mark.integration


def test_hostile_and_broken_envelopes_are_rejected_each_with_its_own_reason(hub: Hub) -> None:
    kit = EnvelopeKit(hub.home)
    customs = kit.store.agency_key("NZ-CUSTOMS")
    registry = KeyRegistry(Database(hub.settings.registry_database))

    # A revoked agency key: NZ-DIA's key is registered, then revoked.
    revoked = Ed25519PrivateKey.generate()
    registry.register("NZ-DIA", revoked.public_key())
    registry.revoke(agency_key_id("NZ-DIA", revoked.public_key()))

    def env(**kw):  # type: ignore[no-untyped-def]
        return kit.envelope(make_report(), **kw)

    cases: list[tuple[str, tuple[bytes | None, bytes]]] = []
    good = kit.wire(env())
    cases.append(("not_wire_format", (b"k1", b"\x7fnot avro at all, just bytes")))
    cases.append(("unknown_schema_id", (good[0], kit.with_schema_id(good[1], 999))))
    cases.append(("undecodable", (good[0], good[1][: len(good[1]) // 2])))  # truncated
    accepted_schema = kit.codec.registry.latest("tiphub.AcceptedReport").schema_id
    cases.append(("wrong_schema", (good[0], kit.with_schema_id(good[1], accepted_schema))))
    moved_key = kit.wire(env())
    cases.append(("key_mismatch", (b"another-report-id", moved_key[1])))
    cases.append(
        (
            "unknown_agency",
            kit.wire(kit.envelope(make_report(source_agency="XX-NOBODY"), key=Ed25519PrivateKey.generate())),
        )
    )
    cases.append(("unknown_key", kit.wire(kit.envelope(make_report(), key=Ed25519PrivateKey.generate()))))
    police_signs_for_customs = env()
    police = kit.store.agency_key("NZ-POLICE")
    police_signs_for_customs["signing_key_id"] = agency_key_id("NZ-POLICE", police.public_key())
    cases.append(("key_agency_mismatch", kit.wire(kit.resign(police_signs_for_customs, police))))
    cases.append(("revoked_key", kit.wire(kit.envelope(make_report(source_agency="NZ-DIA"), key=revoked))))
    forged = env()
    forged["signature"] = Ed25519PrivateKey.generate().sign(b"anything")
    cases.append(("bad_signature", kit.wire(forged)))
    tampered_unsigned = env()
    tampered_unsigned["narrative"] = bytes([tampered_unsigned["narrative"][0] ^ 1]) + tampered_unsigned["narrative"][1:]
    cases.append(("bad_signature", kit.wire(tampered_unsigned)))
    cases.append(("stale_envelope", kit.wire(env(signed_at=hours_ago(3)))))
    cases.append(("future_envelope", kit.wire(env(signed_at=hours_ago(-2)))))
    cases.append(("key_unwrap_failed", kit.wire(env(hub_public=stranger_hub_key()))))
    static = EnvelopeKit(hub.home, epoch=False)  # sealed for the long-lived key a worker opens only if told to
    cases.append(("wrong_hub_key", static.wire(static.envelope(make_report()))))
    tampered = env()
    blob = tampered["subjects"][0]["name"]
    tampered["subjects"][0]["name"] = blob[:-1] + bytes([blob[-1] ^ 0x55])
    cases.append(("field_decrypt_failed", kit.wire(kit.resign(tampered, customs))))
    swapped = env()
    subject = swapped["subjects"][0]
    subject["name"], subject["date_of_birth"] = subject["date_of_birth"], subject["name"]
    cases.append(("field_decrypt_failed", kit.wire(kit.resign(swapped, customs))))
    donor, receiver = env(), env()
    receiver["narrative"] = donor["narrative"]  # a ciphertext lifted from another report
    cases.append(("field_decrypt_failed", kit.wire(kit.resign(receiver, customs))))
    bad_dob = report_from_json(make_report())
    bad_dob["subjects"][0]["date_of_birth"] = "1990-02-30"  # skipped the SDK's validation
    cases.append(("invalid_date", kit.wire(kit.envelope(bad_dob))))
    bad_phone = report_from_json(make_report())
    bad_phone["subjects"][0]["identifiers"][1]["value"] = "call me maybe"
    cases.append(("invalid_identifier", kit.wire(kit.envelope(bad_phone))))
    # Three characters as written, two once a machine-readable zone's check digit is dropped: a hostile
    # agency's poison record, which once stopped the verify stage for every agency behind it.
    check_digit_only = report_from_json(make_report())
    check_digit_only["subjects"][0]["identifiers"][0]["value"] = "AB<3"
    cases.append(("invalid_identifier", kit.wire(kit.envelope(check_digit_only))))
    huge = report_from_json(make_report())
    huge["narrative"] = "x" * 150_000
    cases.append(("oversized", kit.wire(kit.envelope(huge))))
    # Invalid UTF-8: in a plain Avro string on the wire (same length, so the framing still holds) ...
    key, value = kit.wire(env())
    cases.append(("undecodable", (key, value.replace(b"NZ-CUSTOMS", b"NZ-CUST\xffMS", 1))))
    # ... and inside a sealed field, correctly signed: it decrypts, but to bytes that are not text.
    data_key = os.urandom(32)
    entropy = FixedEntropy(
        data_key, X25519PrivateKey.generate(), os.urandom(12), tuple(os.urandom(12) for _ in range(32))
    )
    record = report_from_json(make_report())
    not_text = seal_report(
        record,
        agency_key=customs,
        signing_key_id=agency_key_id("NZ-CUSTOMS", customs.public_key()),
        hub_public=kit.hub_public,
        hub_key_id=kit.hub_key_id,
        entropy=entropy,
    )
    not_text["narrative"] = crypto.seal(
        data_key, b"\xff\xfe\x00bad", crypto.field_aad(record["report_id"], "narrative")
    )
    cases.append(("invalid_utf8", kit.wire(kit.resign(not_text, customs))))
    first_good = make_report()
    cases.append(("duplicate_report_id", kit.wire(kit.envelope(first_good))))  # freshly signed replay

    good_reports = [first_good] + [make_report() for _ in range(len(cases))]
    good_ids = hub.publish(good_reports[:1])
    for index, (_, item) in enumerate(cases):
        hub.send_raw([item])
        good_ids += hub.publish([good_reports[index + 1]])
    hub.start_worker(TIPHUB_MAX_VALUE_BYTES="65536")

    accepted, rejected = hub.wait_for_outcomes(len(good_ids) + len(cases))

    assert sorted(r.key.decode() for r in accepted) == sorted(good_ids)
    by_offset = sorted(rejected, key=lambda r: (r["source_partition"], r["source_offset"]))
    assert Counter(r["reason"] for r in by_offset) == Counter(reason for reason, _ in cases)
    assert len({reason for reason, _ in cases}) >= 19
    for rejection in rejected:
        assert rejection["detail"], rejection
        assert rejection["source_topic"] == hub.topics.submitted
        # What failed before its signer was verified claims an agency it may not be: attributed to nobody,
        # so no one can fill an agency's feed of rejections by claiming to be it.
        if rejection["reason"] in UNVERIFIED:
            assert rejection["source_agency"] is None, rejection
        elif rejection["reason"] in ("stale_envelope", "field_decrypt_failed", "invalid_date"):
            assert rejection["source_agency"] == "NZ-CUSTOMS", rejection
    assert hub.worker_log().count("Traceback") == 0


def test_publish_cli_reports_each_bad_line_with_its_number_and_reason(hub: Hub, tmp_path: Path) -> None:
    lines = [
        json.dumps(make_report()),
        '{"report_id": "broken',
        json.dumps(make_report(colour="blue")),
        json.dumps(make_report(tlp="PURPLE")),
        json.dumps({k: v for k, v in make_report().items() if k != "indicator_type"}),
        json.dumps(make_report(observed_at="yesterday")),
        json.dumps(make_report(report_id="not-a-uuid")),
        json.dumps(make_report(subjects=[{"role": "SUSPECTED_VICTIM", "date_of_birth": "31/12/1990"}])),
        json.dumps(make_report(source_agency="NZ-POLICE")),
        json.dumps(make_report(subjects=[{"role": "WITNESS", "identifiers": [{"kind": "PASPORT", "value": "X1"}]}])),
        json.dumps(make_report()),
    ]
    source = tmp_path / "reports.jsonl"
    source.write_text("\n".join(lines) + "\n")

    result = subprocess.run(
        [sys.executable, "-m", "tiphub", "publish", str(source), "--agency", "NZ-CUSTOMS"],
        env=hub.env(COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "published 2, rejected 9" in result.stdout
    expected = {
        2: "malformed_json",
        3: "unknown_field",
        4: "invalid_enum",
        5: "missing_field",
        6: "invalid_timestamp",
        7: "invalid_uuid",
        8: "invalid_date",
        9: "agency_mismatch",
        10: "invalid_enum",
    }
    for number, reason in expected.items():
        assert f"line {number} {reason}:" in result.stderr, result.stderr
    assert "subjects[0].identifiers[0].kind: 'PASPORT' is not one of PASSPORT" in result.stderr
    assert "colour" in result.stderr and "31/12/1990" not in result.stderr

    hub.start_worker()
    accepted, rejected = hub.wait_for_outcomes(2)
    assert len(accepted) == 2 and rejected == []
