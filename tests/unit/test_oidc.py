"""The OpenID Connect relying party's pure parts: PKCE, the sealed pending sign-in, the ID token's checks, the
provider's metadata, claims mapped to a hub identity, and the settings that configure them."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key as generate_rsa
from pydantic import ValidationError

from gateway.errors import NotPermitted
from gateway.oidc import (
    ClaimMapping,
    Identity,
    PendingSealer,
    PendingSignIn,
    ProviderMetadata,
    ProviderUnavailable,
    authorization_url,
    basic_credentials,
    check_id_token,
    check_state,
    map_claims,
    pkce_pair,
    s256,
)
from tiphub.settings import Settings

ISSUER, CLIENT = "https://idp.example", "tiphub-console"
RSA_KEY = generate_rsa(public_exponent=65537, key_size=2048)


def reason(exc: pytest.ExceptionInfo[NotPermitted]) -> str:
    return exc.value.reason


# -- PKCE ----------------------------------------------------------------------------------------------------


def test_the_s256_challenge_is_rfc_7636s() -> None:
    assert s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_each_pkce_pair_is_fresh_and_well_formed() -> None:
    pairs = [pkce_pair() for _ in range(50)]
    assert len({verifier for verifier, _ in pairs}) == 50
    for verifier, challenge in pairs:
        assert re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", verifier)
        assert challenge == s256(verifier) and challenge != verifier


def test_the_authorization_url_asks_for_a_code_with_s256_and_always_openid() -> None:
    pending = PendingSignIn.new("https://hub.example/v1/session/oidc/callback", time.time())
    url = authorization_url("https://idp.example/auth?tenant=1", CLIENT, "profile openid groups", pending)
    assert url.startswith("https://idp.example/auth?tenant=1&")
    query = dict(p.split("=", 1) for p in url.split("?", 1)[1].split("&"))
    assert query["response_type"] == "code" and query["code_challenge_method"] == "S256"
    assert query["scope"] == "openid+profile+groups"
    assert query["code_challenge"] == s256(pending.verifier) and pending.verifier not in url
    assert query["state"] == pending.state and query["nonce"] == pending.nonce


def test_client_secret_basic_form_encodes_both_parts() -> None:
    header = basic_credentials("my client", "p:ss&word")
    assert base64.b64decode(header.removeprefix("Basic ")).decode() == "my%20client:p%3Ass%26word"


# -- the pending sign-in's cookie ----------------------------------------------------------------------------


def test_a_sealed_pending_sign_in_opens_to_itself_and_shows_nothing() -> None:
    sealer = PendingSealer(b"k" * 32)
    pending = PendingSignIn.new("https://hub.example/cb", time.time())
    sealed = sealer.seal(pending)
    assert sealer.open(sealed, time.time()) == pending
    for secret in (pending.state, pending.nonce, pending.verifier):
        assert secret not in sealed and secret not in base64.urlsafe_b64decode(sealed + "==").decode("latin-1")
    assert sealer.seal(pending) != sealed  # a fresh nonce each time


def test_a_forged_altered_expired_or_missing_pending_sign_in_is_refused() -> None:
    sealer = PendingSealer(b"k" * 32)
    now = time.time()
    sealed = sealer.seal(PendingSignIn.new("https://hub.example/cb", now, ttl_s=600))
    altered = sealed[:10] + ("A" if sealed[10] != "A" else "B") + sealed[11:]
    other_gateway = PendingSealer(b"o" * 32).seal(PendingSignIn.new("https://hub.example/cb", now))
    plain = base64.urlsafe_b64encode(json.dumps({"state": "s"}).encode()).decode()
    for forged in (altered, other_gateway, plain, "not base64 !"):
        with pytest.raises(NotPermitted) as refused:
            sealer.open(forged, now)
        assert reason(refused) == "oidc_pending_sign_in_invalid", forged
    with pytest.raises(NotPermitted) as refused:
        sealer.open(sealed, now + 601)
    assert reason(refused) == "oidc_pending_sign_in_expired"
    for missing in (None, ""):
        with pytest.raises(NotPermitted) as refused:
            sealer.open(missing, now)
        assert reason(refused) == "oidc_no_pending_sign_in"


def test_the_state_must_be_this_browsers() -> None:
    pending = PendingSignIn.new("https://hub.example/cb", time.time())
    check_state(pending, pending.state)
    for other in (None, "", pending.state + "x", pending.nonce):
        with pytest.raises(NotPermitted) as refused:
            check_state(pending, other)
        assert reason(refused) == "oidc_state_mismatch"


# -- the ID token --------------------------------------------------------------------------------------------


def id_token(key: Any = RSA_KEY, algorithm: str = "RS256", **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": CLIENT, "sub": "u-1", "iat": now, "exp": now + 300, "nonce": "n-1", **overrides}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm=algorithm)


def check(token: str, key: Any = None, algorithms: tuple[str, ...] = ("RS256",)) -> dict[str, Any]:
    public = key or RSA_KEY.public_key()
    return check_id_token(token, public, algorithms=algorithms, issuer=ISSUER, client_id=CLIENT, nonce="n-1")


def test_a_good_id_token_gives_its_claims() -> None:
    assert check(id_token(groups=["a"]))["groups"] == ["a"]
    assert check(id_token(aud=[CLIENT, "api"], azp=CLIENT))["sub"] == "u-1"
    ec = generate_private_key(SECP256R1())
    assert check(id_token(ec, "ES256"), ec.public_key(), ("RS256", "ES256"))["sub"] == "u-1"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"aud": "another-app"}, "oidc_id_token_wrong_audience"),
        ({"aud": [CLIENT, "another-app"]}, "oidc_id_token_wrong_audience"),  # several audiences, no azp
        ({"azp": "another-app"}, "oidc_id_token_wrong_audience"),
        ({"iss": "https://evil.example"}, "oidc_id_token_wrong_issuer"),
        ({"exp": int(time.time()) - 3600}, "oidc_id_token_expired"),
        ({"nonce": "n-2"}, "oidc_id_token_nonce_mismatch"),
        ({"nonce": None}, "oidc_id_token_invalid"),
        ({"iat": None}, "oidc_id_token_invalid"),
    ],
)
def test_an_id_token_not_for_this_sign_in_is_refused(overrides: dict[str, Any], expected: str) -> None:
    with pytest.raises(NotPermitted) as refused:
        check(id_token(**overrides))
    assert reason(refused) == expected


def test_only_an_advertised_asymmetric_signature_counts() -> None:
    secret = "a-client-secret-of-32-bytes-or-more"
    public = RSA_KEY.public_key()
    forgeries = [  # (token, the key it is checked with)
        (id_token(RSA_KEY, "PS256"), public),  # the real key, but an algorithm the provider does not advertise
        (id_token(generate_rsa(public_exponent=65537, key_size=2048)), public),  # another key
        (id_token(None, "none"), public),
        (id_token(secret, "HS256"), secret),  # an HMAC under the client secret: would verify, were HS256 allowed
    ]
    for forged, key in forgeries:
        with pytest.raises(NotPermitted) as refused:
            check(forged, key, ("RS256", "HS256", "none"))  # HS256 and none are dropped even if advertised
        assert reason(refused) in ("oidc_id_token_bad_signature", "oidc_id_token_invalid")


def test_provider_metadata_keeps_only_what_is_safe() -> None:
    document = {
        "issuer": ISSUER,
        "authorization_endpoint": ISSUER + "/auth",
        "token_endpoint": ISSUER + "/token",
        "jwks_uri": ISSUER + "/jwks",
        "id_token_signing_alg_values_supported": ["HS256", "RS256", "none"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
    }
    metadata = ProviderMetadata.from_document(ISSUER, document)
    assert metadata.algorithms == ("RS256",) and metadata.iss_in_response
    for broken in (
        {"issuer": "https://other.example"},
        {"id_token_signing_alg_values_supported": ["HS256"]},
        {"code_challenge_methods_supported": ["plain"]},
        {"token_endpoint": "http://idp.example/token"},  # plain http from an https provider
        {"jwks_uri": None},
    ):
        with pytest.raises(ProviderUnavailable):
            ProviderMetadata.from_document(ISSUER, {**document, **broken})


# -- claims to a hub identity --------------------------------------------------------------------------------


def mapping(**overrides: Any) -> ClaimMapping:
    fields: dict[str, Any] = {
        "role_claim": "tiphub_role",
        "agency_claim": "tiphub_agency",
        "partner_claim": "tiphub_partner",
        "subject_claim": "sub",
        "role_map": {},
        "agencies": frozenset({"NZ-NIC", "NZ-LABOUR"}),
        "partners": frozenset({"HSU-TH"}),
        **overrides,
    }
    return ClaimMapping(**fields)


def test_claims_name_a_role_and_its_agency_or_partner() -> None:
    plain = mapping()
    assert map_claims({"sub": "u-1", "tiphub_role": "analyst", "tiphub_agency": "NZ-NIC"}, plain) == Identity(
        "oidc:u-1", "analyst", "NZ-NIC", None
    )
    liaison = {"sub": "u-2", "tiphub_role": ["liaison"], "tiphub_partner": "HSU-TH", "tiphub_agency": "NZ-NIC"}
    assert map_claims(liaison, plain) == Identity("oidc:u-2", "liaison", None, "HSU-TH")
    groups = mapping(role_claim="groups", role_map={"cn=tip-officers": "releasing_officer"}, subject_claim="oid")
    claims = {"sub": "x", "oid": "0f1e", "groups": ["staff", "cn=tip-officers"], "tiphub_agency": ["NZ-LABOUR"]}
    assert map_claims(claims, groups) == Identity("oidc:0f1e", "releasing_officer", "NZ-LABOUR", None)


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"tiphub_agency": "NZ-NIC"}, "oidc_no_role"),
        ({"tiphub_role": "administrator", "tiphub_agency": "NZ-NIC"}, "oidc_no_role"),
        ({"tiphub_role": {"analyst": True}, "tiphub_agency": "NZ-NIC"}, "oidc_no_role"),
        ({"tiphub_role": ["analyst", "auditor"], "tiphub_agency": "NZ-NIC"}, "oidc_ambiguous_role"),
        ({"tiphub_role": "analyst"}, "oidc_no_agency"),
        ({"tiphub_role": "analyst", "tiphub_agency": ["NZ-NIC", "NZ-LABOUR"]}, "oidc_no_agency"),
        ({"tiphub_role": "analyst", "tiphub_agency": "XX-NOBODY"}, "oidc_unknown_agency"),
        ({"tiphub_role": "liaison", "tiphub_agency": "NZ-NIC"}, "oidc_no_partner"),
        ({"tiphub_role": "liaison", "tiphub_partner": "HSU-XX"}, "oidc_unknown_partner"),
        ({"sub": "", "tiphub_role": "analyst", "tiphub_agency": "NZ-NIC"}, "oidc_no_subject"),
    ],
)
def test_claims_that_give_no_identity_the_hub_knows_are_refused(claims: dict[str, Any], expected: str) -> None:
    with pytest.raises(NotPermitted) as refused:
        map_claims({"sub": "u-1", **claims}, mapping())
    assert reason(refused) == expected


def test_with_a_role_map_only_mapped_values_count() -> None:
    groups = mapping(role_claim="groups", role_map={"tip-analysts": "analyst"})
    with pytest.raises(NotPermitted) as refused:
        map_claims({"sub": "u", "groups": ["analyst"], "tiphub_agency": "NZ-NIC"}, groups)  # a role name, unmapped
    assert reason(refused) == "oidc_no_role"


# -- settings ------------------------------------------------------------------------------------------------


def test_oidc_settings_are_checked_naming_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("TIPHUB_OIDC_"):
            monkeypatch.delenv(name)
    assert Settings().oidc_issuer is None  # unset: no OpenID Connect sign-in
    base = {"oidc_issuer": ISSUER, "oidc_client_id": CLIENT}
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    assert Settings(**base, oidc_client_secret_file=secret).oidc_client_secret_value() == "s3cret"
    assert Settings(**base).oidc_client_secret_value() is None  # a public client
    assert Settings(oidc_issuer="http://127.0.0.1:9000", oidc_client_id=CLIENT).oidc_issuer
    for bad, named in [
        ({"oidc_issuer": ISSUER}, "TIPHUB_OIDC_CLIENT_ID"),
        ({**base, "oidc_issuer": "http://idp.example"}, "TIPHUB_OIDC_ISSUER"),
        ({**base, "oidc_client_secret": "s", "oidc_client_secret_file": secret}, "TIPHUB_OIDC_CLIENT_SECRET"),
        ({**base, "oidc_client_secret_file": tmp_path / "none"}, "TIPHUB_OIDC_CLIENT_SECRET_FILE"),
        ({**base, "oidc_role_map": {"admins": "administrator"}}, "TIPHUB_OIDC_ROLE_MAP"),
        ({**base, "oidc_redirect_uri": "/relative"}, "TIPHUB_OIDC_REDIRECT_URI"),
        ({**base, "oidc_subject_claim": " "}, "TIPHUB_OIDC_SUBJECT_CLAIM"),
    ]:
        with pytest.raises(ValidationError, match=named) as error:
            Settings(**bad)
        assert "s3cret" not in str(error.value)
