"""Schema evolution on the real broker: agency systems on release 1 (envelope v1) and release 2 (v2, with
estimated_victims) publish to the same topic; the hub accepts both; a consumer still on release 1 reads
every accepted record with its v1 schema; and the new field reaches no recipient until an agreement names it."""

from __future__ import annotations

import io
import json

import fastavro
import pytest

from schemas.codec import WireCodec
from tests.envelopes import EnvelopeKit
from tests.factories import make_report
from tests.harness import Hub

pytestmark = pytest.mark.integration


def test_release_1_and_release_2_producers_and_consumers_share_the_topics(hub: Hub) -> None:
    codec = WireCodec()
    envelope_v1 = codec.registry.by_id(2)
    accepted_v1 = codec.registry.by_id(3)
    kit = EnvelopeKit(hub.home)
    old = [make_report() for _ in range(3)]
    new = [make_report(estimated_victims=n) for n in (1, 4)]
    hub.send_raw([kit.wire(kit.envelope(r, envelope_schema=envelope_v1), envelope_v1) for r in old])
    hub.publish(new)  # the release-2 SDK: envelope v2
    hub.start_worker()
    accepted, rejected = hub.wait_for_outcomes(len(old) + len(new))
    hub.wait_for_quiet()
    assert rejected == [] and len(accepted) == len(old) + len(new)

    # A release-2 consumer sees the field (null for v1 reports); a release-1 consumer reads every record
    # by its writer's schema id into its own v1 schema, as a Confluent deserializer with a reader schema does.
    latest = {r["report_id"]: r for r in (codec.decode(a.value)[1] for a in accepted)}
    assert {k: v["estimated_victims"] for k, v in latest.items()} == {
        **{r["report_id"]: None for r in old},
        **{r["report_id"]: r["estimated_victims"] for r in new},
    }
    for record in accepted:
        writer = codec.registry.by_id(int.from_bytes(record.value[1:5], "big"))
        assert writer is not None and writer.version == 3  # this release writes accepted reports as v3
        old_view = fastavro.schemaless_reader(io.BytesIO(record.value[5:]), writer.parsed, accepted_v1.parsed)
        assert "estimated_victims" not in old_view and old_view["report_id"] == record.key.decode()

    # No agreement names the new field: it is in no recipient's view.
    views = [d["view_json"] for d in hub.decoded(hub.topics.decisions) if d["view_json"]]
    assert views and not any("estimated_victims" in json.loads(v) for v in views)
