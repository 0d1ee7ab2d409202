"""No plaintext personal data on any topic: canary identities are published, then every record
of every topic on the broker (keys, values, headers, decoded fields) is searched for them."""

from __future__ import annotations

import asyncio
import contextlib
import re

import pytest

from adapters.kafka.embedded import admin_client
from schemas.codec import CodecError, WireCodec
from tests.factories import make_report
from tests.harness import Hub, Record, flatten_strings, read_topics

pytestmark = pytest.mark.integration

CANARY_NAME = "Zyxqorth Canarybird"
CANARY_PASSPORT = "QX7731904"
CANARY_PHONE = "+64 21 555 0199"
CANARY_EMAIL = "zyxqorth.canary@example.org"
CANARY_REGISTRATION = "NZBN-CANARY-424242"
CANARY_NARRATIVE = "canary-narrative-marker-5f3e"
CANARY_DOB = "1903-07-29"

# Each canary and the forms it could take after normalisation.
NEEDLES = [
    "Zyxqorth",
    "zyxqorth",
    "Canarybird",
    "canarybird",
    "QX7731904",
    "KH:QX7731904",
    "555 0199",
    "215550199",
    "+64215550199",
    "64215550199",
    "zyxqorth.canary",
    "CANARY-424242",
    "CANARY424242",
    "canary-narrative-marker",
    "1903-07-29",
    "19030729",
]


def canary_reports() -> list[dict]:
    subject = {
        "role": "SUSPECTED_VICTIM",
        "name": CANARY_NAME,
        "date_of_birth": CANARY_DOB,
        "sex": "F",
        "nationality": "KH",
        "identifiers": [
            {"kind": "PASSPORT", "value": CANARY_PASSPORT, "issuer": "KH"},
            {"kind": "PHONE", "value": CANARY_PHONE},
            {"kind": "EMAIL", "value": CANARY_EMAIL},
        ],
    }
    organisation = {
        "role": "EMPLOYER",
        "name": "Harbour Seafoods Ltd",
        "registration": CANARY_REGISTRATION,
        "country": "NZ",
    }
    return [
        make_report(subjects=[subject], organisations=[organisation], narrative=CANARY_NARRATIVE),
        make_report(
            source_agency="NZ-LABOUR",
            indicator_type="LABOUR_INSPECTION",
            subjects=[{**subject, "name": "Canarybird Zyxqorth"}],
            narrative=f"{CANARY_NARRATIVE} again",
        ),
        # Rejected at the hub (date of birth in the future of the observation): the rejection
        # must not carry the values either.
        make_report(
            subjects=[{**subject, "date_of_birth": "2031-01-01"}],
            observed_at="2026-10-30T22:15:00Z",
        ),
    ]


def leaks(records: list[Record]) -> list[str]:
    codec = WireCodec()
    found = []
    pattern = re.compile("|".join(re.escape(n) for n in NEEDLES))
    for record in records:
        texts = [(record.key or b"").decode("latin-1"), (record.value or b"").decode("latin-1")]
        texts += [f"{k}={v.decode('latin-1')}" for k, v in record.headers]
        with contextlib.suppress(CodecError):  # not every topic holds our wire format
            texts += list(flatten_strings(codec.decode(record.value)[1]))
        for text in texts:
            match = pattern.search(text)
            if match:
                found.append(f"{record.topic}[{record.partition}]@{record.offset}: {match.group(0)!r}")
    return found


def all_topics(broker: str, prefix: str) -> list[str]:
    """This test's topics and the broker's internal ones (offsets, transactions). Other tests share
    the broker, and the control test below writes a canary in clear into its own topic on purpose."""
    admin = admin_client(broker)
    try:
        return sorted(t for t in admin.list_topics() if t.startswith((prefix, "__")))
    finally:
        admin.close()


@pytest.mark.noida
def test_no_canary_value_appears_in_any_record_of_any_topic(hub: Hub) -> None:
    reports = canary_reports()
    # The SDK refuses the future date of birth, so the third goes in as an agency bypassing it.
    hub.publish(reports[:2])
    from schemas.convert import report_from_json
    from tests.envelopes import EnvelopeKit

    kit = EnvelopeKit(hub.home)
    bypass = report_from_json(make_report(subjects=reports[0]["subjects"]))
    bypass["subjects"][0]["date_of_birth"] = "2031-01-01"
    hub.send_raw([kit.wire(kit.envelope(bypass))])
    hub.start_worker()
    accepted, rejected = hub.wait_for_outcomes(3)
    assert len(accepted) == 2 and [r["reason"] for r in rejected] == ["invalid_date"]

    topics = all_topics(hub.broker, hub.prefix)
    assert hub.topics.accepted in topics and "__consumer_offsets" in topics
    records = asyncio.run(read_topics(hub.broker, topics, isolation="read_uncommitted"))
    assert len(records) >= 6

    assert leaks(records) == []
    log = hub.worker_log()
    assert [n for n in NEEDLES if n in log] == []


@pytest.mark.noida
def test_the_canary_scan_finds_a_value_left_in_plaintext(hub: Hub) -> None:
    """The control: if a field were ever written in clear, the scan above would see it."""
    hub.send_raw([(b"control", f'{{"name": "{CANARY_NAME}"}}'.encode())], topic=hub.topics.rejected)
    records = asyncio.run(read_topics(hub.broker, [hub.topics.rejected]))
    assert any("Zyxqorth" in leak for leak in leaks(records))
