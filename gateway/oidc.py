"""The console's OpenID Connect relying party: authorization code flow with PKCE against the organisation's
identity provider, its ID token checked, its claims mapped to a tiphub role and the agency or partner it acts for.

A sign-in starts with a redirect to the provider carrying state, nonce and an S256 code challenge; what the
callback needs to finish it (state, nonce, code verifier, redirect URI, expiry) travels in a short-lived cookie
sealed with AES-256-GCM under a key derived from the gateway's own, so the browser can neither read nor forge
it, and any gateway instance of the hub can finish a sign-in another started. The callback trades the code at
the token endpoint and accepts the ID token only if an asymmetric key of the provider's JWKS signed it (never
`none`, never an HMAC), for this issuer and this client, unexpired, with the nonce this browser was given.

The pure parts (PKCE, sealing, ID token checks, claim mapping) take no I/O; `RelyingParty` adds the provider's
discovery document, JWKS and token endpoint over HTTPS, in a worker thread so the event loop never waits on
them. Every refusal is a `NotPermitted` with a stable reason (the audit's), never an ID token, name or email.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from domain import crypto
from domain.callers import PARTNER_ROLES, ROLES
from gateway.errors import NotPermitted
from tiphub.settings import Settings

log = logging.getLogger(__name__)

PENDING_COOKIE = "tiphub_oidc_pending"
PENDING_PATH = "/v1/session/oidc"  # the pending sign-in's cookie goes to the callback only
PENDING_TTL_S = 600  # time to sign in at the provider
LEEWAY_S = 60  # clock skew allowed between the provider and the gateway
DISCOVERY_TTL_S = 3600  # the provider's metadata is fetched again after this
HTTP_TIMEOUT_S = 10.0
# Signature algorithms an ID token may use: asymmetric only. An HMAC would be keyed with the client secret (or,
# misread, with a public key) and `none` is no signature.
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_PENDING_AAD = b"tiphub/oidc-pending/v1"
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")


class ProviderUnavailable(Exception):
    """The identity provider could not be asked (unreachable, or its answer was not what OIDC defines)."""


# -- pure parts --------------------------------------------------------------------------------------------


def s256(verifier: str) -> str:
    """The PKCE code challenge of a verifier (RFC 7636, S256)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def pkce_pair() -> tuple[str, str]:
    """A fresh (code verifier, S256 code challenge): 64 characters of 384 random bits."""
    verifier = secrets.token_urlsafe(48)
    return verifier, s256(verifier)


@dataclass(frozen=True)
class PendingSignIn:
    """What the callback needs to finish a sign-in this browser started."""

    state: str
    nonce: str
    verifier: str
    redirect_uri: str
    expires_at: float  # epoch seconds

    @classmethod
    def new(cls, redirect_uri: str, now: float, ttl_s: float = PENDING_TTL_S) -> PendingSignIn:
        return cls(secrets.token_urlsafe(24), secrets.token_urlsafe(24), pkce_pair()[0], redirect_uri, now + ttl_s)


class PendingSealer:
    """Seals a pending sign-in into a cookie value the browser can neither read nor alter."""

    def __init__(self, gateway_secret: bytes) -> None:
        # A key of its own, derived: the gateway's secret itself is never used for two purposes.
        self._key = HKDF(SHA256(), crypto.KEY_BYTES, None, _PENDING_AAD).derive(gateway_secret)

    def seal(self, pending: PendingSignIn) -> str:
        blob = crypto.seal(self._key, json.dumps(asdict(pending)).encode(), _PENDING_AAD)
        return base64.urlsafe_b64encode(blob).rstrip(b"=").decode()

    def open(self, sealed: str | None, now: float) -> PendingSignIn:
        if not sealed:
            raise NotPermitted("oidc_no_pending_sign_in", "no sign-in was started in this browser, or it expired")
        try:
            blob = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
            pending = PendingSignIn(**json.loads(crypto.unseal(self._key, blob, _PENDING_AAD)))
        except (ValueError, TypeError, binascii.Error, crypto.DecryptionError):
            raise NotPermitted("oidc_pending_sign_in_invalid", "the sign-in cookie is not one this hub set") from None
        if now > pending.expires_at:
            raise NotPermitted("oidc_pending_sign_in_expired", "the sign-in took too long: start again")
        return pending


def check_state(pending: PendingSignIn, returned: str | None) -> None:
    """The callback answers the sign-in this browser started, not one another site started for it."""
    if not returned or not hmac.compare_digest(pending.state.encode(), returned.encode()):
        raise NotPermitted("oidc_state_mismatch", "the sign-in answer does not belong to this browser's sign-in")


def check_id_token(
    id_token: str, key: Any, *, algorithms: Iterable[str], issuer: str, client_id: str, nonce: str
) -> dict[str, Any]:
    """The claims of an ID token (OpenID Connect Core 3.1.3.7) signed by `key` with one of `algorithms` (only
    the asymmetric ones count), for this issuer and client, unexpired, carrying `nonce`."""
    allowed = [a for a in algorithms if a in ASYMMETRIC_ALGORITHMS]
    try:
        claims: dict[str, Any] = jwt.decode(
            id_token,
            key,
            algorithms=allowed,
            audience=client_id,
            issuer=issuer,
            options={"require": ["iss", "aud", "exp", "iat", "sub", "nonce"]},
            leeway=LEEWAY_S,
        )
    except jwt.InvalidAudienceError:
        raise NotPermitted("oidc_id_token_wrong_audience", "the ID token was issued to another client") from None
    except jwt.InvalidIssuerError:
        raise NotPermitted("oidc_id_token_wrong_issuer", "the ID token comes from another issuer") from None
    except jwt.ExpiredSignatureError:
        raise NotPermitted("oidc_id_token_expired", "the ID token has expired") from None
    except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError):
        raise NotPermitted("oidc_id_token_bad_signature", "the ID token's signature does not verify") from None
    except jwt.PyJWTError:
        raise NotPermitted("oidc_id_token_invalid", "the ID token is not valid") from None
    if not isinstance(claims["nonce"], str) or not hmac.compare_digest(claims["nonce"].encode(), nonce.encode()):
        raise NotPermitted("oidc_id_token_nonce_mismatch", "the ID token was not issued for this sign-in")
    azp = claims.get("azp")
    several = isinstance(claims["aud"], list) and len(claims["aud"]) > 1
    if (azp is not None and azp != client_id) or (several and azp is None):
        raise NotPermitted("oidc_id_token_wrong_audience", "the ID token was issued to another client")
    return claims


@dataclass(frozen=True)
class ClaimMapping:
    """Which claims say who a person is to the hub, and what the hub knows: its agencies and partners."""

    role_claim: str
    agency_claim: str
    partner_claim: str
    subject_claim: str
    role_map: Mapping[str, str]  # the role claim's values to tiphub roles; empty: the values are role names
    agencies: frozenset[str]
    partners: frozenset[str]

    @classmethod
    def of(cls, settings: Settings, agencies: Iterable[str], partners: Iterable[str]) -> ClaimMapping:
        return cls(
            role_claim=settings.oidc_role_claim,
            agency_claim=settings.oidc_agency_claim,
            partner_claim=settings.oidc_partner_claim,
            subject_claim=settings.oidc_subject_claim,
            role_map=dict(settings.oidc_role_map),
            agencies=frozenset(agencies),
            partners=frozenset(partners),
        )


@dataclass(frozen=True)
class Identity:
    """Who a signed-in person is to the hub: the subject their session names, a role, and whom they act for."""

    subject: str
    role: str
    agency: str | None
    partner: str | None


def map_claims(claims: Mapping[str, Any], mapping: ClaimMapping) -> Identity:
    """The hub identity an ID token's claims give, or a refusal: a role no claim value maps to, two different
    roles (the hub does not guess which one a person meant), a role without its agency or partner, or an
    agency or partner the hub does not know."""
    values = _strings(claims.get(mapping.role_claim))
    if mapping.role_map:
        roles = {mapping.role_map[v] for v in values if v in mapping.role_map}
    else:
        roles = {v for v in values if v in ROLES}
    if not roles:
        raise NotPermitted("oidc_no_role", "your account at the identity provider has no tiphub role")
    if len(roles) > 1:
        raise NotPermitted("oidc_ambiguous_role", "your account maps to more than one tiphub role")
    (role,) = roles
    subject = claims.get(mapping.subject_claim)
    if not isinstance(subject, str) or not subject.strip() or len(subject) > 255:
        raise NotPermitted("oidc_no_subject", "the ID token names no subject")
    abroad = role in PARTNER_ROLES
    kind, claim, known = (
        ("partner", mapping.partner_claim, mapping.partners)
        if abroad
        else ("agency", mapping.agency_claim, mapping.agencies)
    )
    acts_for = _one(claims.get(claim))
    if acts_for is None:  # reasons oidc_no_partner, oidc_no_agency
        raise NotPermitted(f"oidc_no_{kind}", f"the role {role} acts for one {kind}; your account names none")
    if acts_for not in known:  # reasons oidc_unknown_partner, oidc_unknown_agency
        raise NotPermitted(f"oidc_unknown_{kind}", f"the {kind} your account names is not one this hub knows")
    return Identity(f"oidc:{subject}", role, None if abroad else acts_for, acts_for if abroad else None)


def _strings(value: Any) -> list[str]:
    """A claim as its string values: one string, or a list of them (groups)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _one(value: Any) -> str | None:
    """A claim that must name one thing (an agency, a partner): a string, or a list of exactly one."""
    values = _strings(value)
    return values[0] if len(values) == 1 and values[0] else None


def authorization_url(endpoint: str, client_id: str, scopes: str, pending: PendingSignIn) -> str:
    """Where the browser goes to sign in: the code flow, its state, nonce and S256 challenge."""
    scope = " ".join(dict.fromkeys(["openid", *scopes.split()]))
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": pending.redirect_uri,
            "scope": scope,
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": s256(pending.verifier),
            "code_challenge_method": "S256",
        }
    )
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"


def basic_credentials(client_id: str, secret: str) -> str:
    """client_secret_basic's header value: both parts form-encoded first (RFC 6749 section 2.3.1)."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(pair).decode()


# -- the provider, over HTTP -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderMetadata:
    """The parts of the provider's discovery document the sign-in uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    algorithms: tuple[str, ...]  # asymmetric ID token signature algorithms it advertises
    iss_in_response: bool  # RFC 9207: the authorization response names its issuer

    @classmethod
    def from_document(cls, issuer: str, document: Any) -> ProviderMetadata:
        if not isinstance(document, dict) or document.get("issuer") != issuer:
            raise ProviderUnavailable("the discovery document names another issuer")
        endpoints = [document.get(k) for k in ("authorization_endpoint", "token_endpoint", "jwks_uri")]
        plain_ok = urlsplit(issuer).scheme == "http"  # a loopback test provider (tiphub/settings.py)
        for url in endpoints:
            if not isinstance(url, str) or urlsplit(url).scheme not in (("https", "http") if plain_ok else ("https",)):
                raise ProviderUnavailable("the discovery document lacks an https endpoint")
        advertised = document.get("id_token_signing_alg_values_supported") or []
        algorithms = tuple(a for a in advertised if a in ASYMMETRIC_ALGORITHMS)
        if not algorithms:
            raise ProviderUnavailable("the provider advertises no asymmetric ID token signature algorithm")
        methods = document.get("code_challenge_methods_supported")
        if methods is not None and "S256" not in methods:
            raise ProviderUnavailable("the provider does not support PKCE with S256")
        authorization, token, jwks = endpoints
        return cls(
            issuer=issuer,
            authorization_endpoint=str(authorization),
            token_endpoint=str(token),
            jwks_uri=str(jwks),
            algorithms=algorithms,
            iss_in_response=document.get("authorization_response_iss_parameter_supported") is True,
        )


class RelyingParty:
    """The gateway as the identity provider's client: starts sign-ins and finishes them into an Identity."""

    def __init__(self, settings: Settings, mapping: ClaimMapping, sealer: PendingSealer) -> None:
        if settings.oidc_issuer is None or settings.oidc_client_id is None:
            raise ValueError("TIPHUB_OIDC_ISSUER and TIPHUB_OIDC_CLIENT_ID: not set")
        self.issuer = settings.oidc_issuer
        self.client_id = settings.oidc_client_id
        self.scopes = settings.oidc_scopes
        self.redirect_uri = settings.oidc_redirect_uri
        self.mapping = mapping
        self.sealer = sealer
        self._secret = settings.oidc_client_secret_value()
        self._metadata: tuple[ProviderMetadata, float] | None = None
        self._jwks: jwt.PyJWKClient | None = None
        self._lock = asyncio.Lock()

    async def metadata(self) -> ProviderMetadata:
        """The provider's discovery document, fetched at most once an hour (and again after a failure)."""
        async with self._lock:
            if self._metadata is None or time.monotonic() > self._metadata[1]:
                url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
                document = await asyncio.to_thread(_get_json, url)
                metadata = ProviderMetadata.from_document(self.issuer, document)
                if self._jwks is None or self._jwks.uri != metadata.jwks_uri:
                    self._jwks = jwt.PyJWKClient(metadata.jwks_uri, lifespan=300, timeout=HTTP_TIMEOUT_S)
                self._metadata = (metadata, time.monotonic() + DISCOVERY_TTL_S)
            return self._metadata[0]

    async def start(self, redirect_uri: str) -> tuple[str, str]:
        """(the provider's authorization URL to send the browser to, the sealed pending sign-in for its cookie)."""
        metadata = await self.metadata()
        pending = PendingSignIn.new(self.redirect_uri or redirect_uri, time.time())
        return authorization_url(metadata.authorization_endpoint, self.client_id, self.scopes, pending), (
            self.sealer.seal(pending)
        )

    async def finish(self, params: Mapping[str, str], sealed: str | None) -> Identity:
        """The identity a callback's parameters prove, for the sign-in sealed in this browser's cookie."""
        pending = self.sealer.open(sealed, time.time())
        check_state(pending, params.get("state"))
        try:
            metadata = await self.metadata()
        except ProviderUnavailable:
            raise NotPermitted("oidc_provider_unavailable", "the identity provider cannot be reached") from None
        error = params.get("error")
        if error is not None:
            named = error if _ERROR_CODE.fullmatch(error) else "error"
            raise NotPermitted("oidc_provider_error", f"the identity provider did not sign you in ({named})")
        # RFC 9207: a provider that names itself in its answers must; one that names another is refused (mix-up).
        returned_issuer = params.get("iss")
        if returned_issuer != metadata.issuer and (returned_issuer is not None or metadata.iss_in_response):
            raise NotPermitted("oidc_issuer_mismatch", "the sign-in answer comes from another identity provider")
        code = params.get("code")
        if not code:
            raise NotPermitted("oidc_no_code", "the sign-in answer carries no authorization code")
        id_token = await self._exchange(metadata, code, pending)
        try:
            key = await asyncio.to_thread(self._signing_key, id_token)
        except jwt.PyJWKClientConnectionError:
            raise NotPermitted("oidc_provider_unavailable", "the identity provider cannot be reached") from None
        except jwt.PyJWTError:  # no key of the provider's by that id, or not a JWT at all
            raise NotPermitted("oidc_id_token_bad_signature", "the ID token's signature does not verify") from None
        except Exception:  # its key set is not JSON, or not a key set: the provider's fault, refused and audited
            raise NotPermitted("oidc_provider_unavailable", "the identity provider's keys cannot be read") from None
        claims = check_id_token(
            id_token,
            key,
            algorithms=metadata.algorithms,
            issuer=metadata.issuer,
            client_id=self.client_id,
            nonce=pending.nonce,
        )
        return map_claims(claims, self.mapping)

    def _signing_key(self, id_token: str) -> Any:
        assert self._jwks is not None  # metadata() made it
        return self._jwks.get_signing_key_from_jwt(id_token).key

    async def _exchange(self, metadata: ProviderMetadata, code: str, pending: PendingSignIn) -> str:
        """The ID token the token endpoint gives for this code and verifier (client_secret_basic, or a public
        client proving itself by PKCE alone)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
            "code_verifier": pending.verifier,
        }
        headers = {}
        if self._secret is None:
            form["client_id"] = self.client_id
        else:
            headers["Authorization"] = basic_credentials(self.client_id, self._secret)
        try:
            answer = await asyncio.to_thread(_post_form, metadata.token_endpoint, form, headers)
        except ProviderUnavailable:
            raise NotPermitted("oidc_token_exchange_failed", "the identity provider refused the sign-in") from None
        id_token = answer.get("id_token") if isinstance(answer, dict) else None
        if not isinstance(id_token, str):
            raise NotPermitted("oidc_token_exchange_failed", "the identity provider gave no ID token")
        return id_token


def _get_json(url: str) -> Any:
    return _request(url, None, {})


def _post_form(url: str, form: Mapping[str, str], headers: Mapping[str, str]) -> Any:
    return _request(url, urlencode(form).encode(), {"Content-Type": "application/x-www-form-urlencoded", **headers})


def _request(url: str, body: bytes | None, headers: Mapping[str, str]) -> Any:
    """A JSON answer of the provider; any failure (unreachable, an error status, not JSON) is ProviderUnavailable,
    named by its kind only: an answer may quote what was sent."""
    if urlsplit(url).scheme not in ("https", "http"):  # never file: or another scheme urllib would open
        raise ProviderUnavailable("not an http(s) URL")
    request = urllib.request.Request(url, body, {"Accept": "application/json", **headers})  # noqa: S310 (checked)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as answer:  # noqa: S310 (checked)
            return json.loads(answer.read(1 << 20))
    except urllib.error.HTTPError as exc:
        error = _error_code(exc)
        log.warning("the identity provider answered %s %s (%s)", exc.code, urlsplit(url).path, error)
        raise ProviderUnavailable(f"HTTP {exc.code} ({error})") from None
    except Exception as exc:  # unreachable, a broken status line (http.client), not JSON: the provider's fault
        log.warning("the identity provider could not be asked: %s", type(exc).__name__)
        raise ProviderUnavailable(type(exc).__name__) from None


def _error_code(exc: urllib.error.HTTPError) -> str:
    """The OAuth error code of an error answer (invalid_grant, ...), if it is one."""
    try:
        error = json.loads(exc.read(4096)).get("error", "")
    except (OSError, ValueError, AttributeError):
        return "unknown"
    return error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else "unknown"
