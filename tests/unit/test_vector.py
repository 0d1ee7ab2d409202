"""docs/test-vectors/envelope-v1.json is what an integrating agency checks its code against:
rebuilding it from its inputs must give its outputs byte for byte, and the hub must open it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from adapters.memory.vault import InMemoryKeyVault
from adapters.sql.database import Database
from adapters.sql.registry import KeyRegistry
from domain.crypto import unseal_field
from domain.linkage import Linker
from domain.signing import agency_key_id
from producers.publisher import FixedEntropy, seal_report
from schemas.codec import WireCodec
from schemas.convert import report_from_json
from schemas.envelope import signing_bytes
from streams.accept import AcceptStage, Submission

V1 = WireCodec().registry.by_id(2)  # the vector documents version 1 of the envelope
VECTOR = json.loads((Path(__file__).resolve().parents[2] / "docs" / "test-vectors" / "envelope-v1.json").read_text())


def test_the_documented_envelope_is_reproduced_byte_for_byte() -> None:
    inputs, outputs = VECTOR["inputs"], VECTOR["outputs"]
    agency = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(inputs["agency_ed25519_private_key"]))
    hub = X25519PrivateKey.from_private_bytes(bytes.fromhex(inputs["hub_x25519_private_key"]))
    entropy = FixedEntropy(
        bytes.fromhex(inputs["data_key"]),
        X25519PrivateKey.from_private_bytes(bytes.fromhex(inputs["ephemeral_x25519_private_key"])),
        bytes.fromhex(inputs["wrap_nonce"]),
        tuple(bytes.fromhex(n) for n in inputs["field_nonces_in_order"].values()),
    )
    envelope = seal_report(
        report_from_json(inputs["report"]),
        agency_key=agency,
        signing_key_id=agency_key_id("NZ-CUSTOMS", agency.public_key()),
        hub_public=hub.public_key(),
        hub_key_id=inputs["hub_key_id"],
        signed_at=datetime.fromisoformat(inputs["signed_at"].replace("Z", "+00:00")),
        entropy=entropy,
        envelope_schema=V1,
    )
    assert envelope["signing_key_id"] == outputs["signing_key_id"]
    assert signing_bytes(envelope, V1).hex() == outputs["signing_bytes"]
    assert envelope["signature"].hex() == outputs["signature"]
    assert WireCodec().encode_with(V1, envelope).hex() == outputs["wire_value"]


def test_the_hub_opens_the_documented_envelope(tmp_path: Path) -> None:
    inputs, outputs = VECTOR["inputs"], VECTOR["outputs"]
    agency = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(inputs["agency_ed25519_private_key"]))
    registry = KeyRegistry(Database(f"sqlite:///{tmp_path}/registry.sqlite3"))
    registry.register("NZ-CUSTOMS", agency.public_key())
    vault = InMemoryKeyVault()
    stage = AcceptStage(
        registry=registry,
        vault=vault,
        linker=Linker(b"\x00" * 32, 1),
        hub_key=X25519PrivateKey.from_private_bytes(bytes.fromhex(inputs["hub_x25519_private_key"])),
        hub_key_id=inputs["hub_key_id"],
    )
    broker_time = int(datetime(2026, 10, 30, 22, 20, 1, tzinfo=UTC).timestamp() * 1000)
    value = bytes.fromhex(outputs["wire_value"])
    [verdict] = stage.process([Submission("t", 0, 0, inputs["report"]["report_id"].encode(), value, broker_time)])
    accepted = verdict.accepted
    assert verdict.rejected is None and accepted is not None
    subject, report_id = accepted["subjects"][0], accepted["report_id"]
    key = vault.get(subject["subject_key_id"])
    assert key is not None
    opened = {
        "name": unseal_field(key, report_id, "subjects[0].name", subject["name"]),
        "date_of_birth": unseal_field(key, report_id, "subjects[0].date_of_birth", subject["date_of_birth"]),
        "passport": unseal_field(
            key, report_id, "subjects[0].identifiers[0].value", subject["identifiers"][0]["value"]
        ),
    }
    assert opened == {"name": "Sokha Chan", "date_of_birth": "2008-04-02", "passport": "N01234567"}
