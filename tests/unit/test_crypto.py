"""Envelope cryptography: sealed fields open only where they were sealed, for whom they were sealed."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from domain import crypto


def test_a_sealed_field_opens_at_its_own_report_and_path_only() -> None:
    key = crypto.new_data_key()
    blob = crypto.seal_field(key, "r1", "subjects[0].name", "Sokha Chan")
    assert crypto.unseal_field(key, "r1", "subjects[0].name", blob) == "Sokha Chan"
    for report_id, path in (
        ("r2", "subjects[0].name"),
        ("r1", "subjects[1].name"),
        ("r1", "narrative"),
    ):
        with pytest.raises(crypto.DecryptionError):
            crypto.unseal_field(key, report_id, path, blob)
    with pytest.raises(crypto.DecryptionError):
        crypto.unseal_field(crypto.new_data_key(), "r1", "subjects[0].name", blob)


def test_sealing_the_same_value_twice_gives_different_ciphertexts() -> None:
    key = crypto.new_data_key()
    assert crypto.seal_field(key, "r", "p", "same") != crypto.seal_field(key, "r", "p", "same")


def test_the_wrapped_data_key_opens_only_with_the_hub_key_and_its_report() -> None:
    hub = X25519PrivateKey.generate()
    data_key = crypto.new_data_key()
    ephemeral, wrapped = crypto.wrap_data_key(hub.public_key(), "r1", data_key)
    assert crypto.unwrap_data_key(hub, "r1", ephemeral, wrapped) == data_key
    with pytest.raises(crypto.DecryptionError):
        crypto.unwrap_data_key(hub, "r2", ephemeral, wrapped)
    with pytest.raises(crypto.DecryptionError):
        crypto.unwrap_data_key(X25519PrivateKey.generate(), "r1", ephemeral, wrapped)


def test_signatures_verify_only_the_signed_bytes() -> None:
    key = Ed25519PrivateKey.generate()
    signature = crypto.sign(key, b"envelope")
    assert crypto.verify(key.public_key(), signature, b"envelope")
    assert not crypto.verify(key.public_key(), signature, b"envelopf")
    assert not crypto.verify(Ed25519PrivateKey.generate().public_key(), signature, b"envelope")


def test_sealing_a_report_transforms_every_sensitive_value_and_leaves_the_callers_report_as_it_was() -> None:
    import copy

    from schemas.convert import report_from_json
    from schemas.envelope import sensitive_slots, transform_sensitive
    from tests.factories import make_report

    report = report_from_json(make_report())
    before = copy.deepcopy(report)
    sealed = transform_sensitive(report, lambda path, value: f"<{path}>")

    assert report == before  # the caller's plaintext is not overwritten by ciphertext
    paths = [path for path, _, _ in sensitive_slots(before)]
    assert paths and [holder[key] for _, holder, key in sensitive_slots(sealed)] == [f"<{p}>" for p in paths]
    assert sealed["elements"] == before["elements"] and sealed["report_id"] == before["report_id"]
