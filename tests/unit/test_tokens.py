"""Gateway tokens: what is refused, and why (the reason code is what the audit records)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.sql.database import Database
from adapters.sql.tokens import TokenAuthority
from domain.callers import TokenError


@pytest.fixture
def authority(tmp_path: Path) -> TokenAuthority:
    key = Ed25519PrivateKey.generate()
    return TokenAuthority(key, key.public_key(), Database(f"sqlite:///{tmp_path}/tokens.sqlite3"))


def refused(authority: TokenAuthority, token: str) -> str:
    with pytest.raises(TokenError) as caught:
        authority.verify(token)
    return caught.value.reason


def test_a_token_names_its_role_and_whom_the_caller_acts_for(authority: TokenAuthority) -> None:
    caller = authority.verify(authority.issue("liaison", "Somchai", partner="HSU-TH", ttl_s=60))
    assert (caller.role, caller.partner, caller.agency, caller.acts_for) == ("liaison", "HSU-TH", None, "HSU-TH")


def test_expired_tampered_foreign_and_revoked_tokens_are_refused(authority: TokenAuthority, tmp_path: Path) -> None:
    old = authority.issue("analyst", "Ana", agency="NZ-NIC", ttl_s=60, now=datetime.now(UTC) - timedelta(hours=1))
    assert refused(authority, old) == "token_expired"

    good = authority.issue("analyst", "Ana", agency="NZ-NIC")
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["role"] = "auditor"  # promote oneself
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert refused(authority, f"{header}.{forged}.{signature}") == "bad_signature"

    stranger = Ed25519PrivateKey.generate()
    other_hub = TokenAuthority(stranger, stranger.public_key(), Database(f"sqlite:///{tmp_path}/other.sqlite3"))
    assert refused(authority, other_hub.issue("analyst", "Ana", agency="NZ-NIC")) == "bad_signature"

    wrong_audience = jwt.encode(
        {**jwt.decode(good, options={"verify_signature": False}), "aud": "another-service"},
        authority._key,
        algorithm="EdDSA",
    )
    assert refused(authority, wrong_audience) == "wrong_audience"

    unsigned = jwt.encode(jwt.decode(good, options={"verify_signature": False}), None, algorithm="none")
    assert refused(authority, unsigned) == "malformed_token"
    assert refused(authority, "not-a-token") == "malformed_token"

    assert authority.revoke(jwt.decode(good, options={"verify_signature": False})["jti"], "lost laptop")
    assert refused(authority, good) == "token_revoked"


@pytest.mark.parametrize(
    ("role", "kwargs", "message"),
    [
        ("janitor", {"agency": "NZ-NIC"}, "role: must be one of"),
        ("liaison", {"agency": "NZ-NIC"}, "acts for a partner"),
        ("analyst", {"partner": "HSU-TH"}, "acts for an agency"),
        ("analyst", {"agency": "NZ-NIC", "ttl_s": 0}, "ttl"),
    ],
)
def test_issuing_refuses_tokens_that_would_be_ambiguous(
    authority: TokenAuthority, role: str, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        authority.issue(role, "someone", **kwargs)  # type: ignore[arg-type]
