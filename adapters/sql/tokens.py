"""Gateway bearer tokens: EdDSA (Ed25519) JWTs with audience, expiry and a unique id, revocable.

A token names one role and, for that role, the agency or partner the caller acts for. The
gateway trusts nothing else in it. Revocation is a list of token ids in a database the gateway
checks on every request (a revoked token is refused at once, not at expiry).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from adapters.sql.database import Database
from domain.callers import PARTNER_ROLES, ROLES, Caller, TokenError

ISSUER = "tiphub"
AUDIENCE = "tiphub-gateway"
DEFAULT_TTL_S = 8 * 3600
MAX_TTL_S = 30 * 24 * 3600
# What a token is for. An access token (no `use` claim) calls the API; a sign-in token ("signin") only opens a
# console session, once: the link `tiphub up` prints carries one, so a link seen again (a browser's history,
# a screen share) opens nothing.
ACCESS, SIGNIN = "access", "signin"


class TokenAuthority:
    def __init__(self, key: Ed25519PrivateKey | None, public: Ed25519PublicKey, db: Database) -> None:
        self._key = key
        self._public = public
        self.db = db
        db.execute(
            "CREATE TABLE IF NOT EXISTS revoked_tokens (token_id TEXT PRIMARY KEY, revoked_at TEXT NOT NULL, "
            "reason TEXT NOT NULL)"
        )

    def issue(
        self,
        role: str,
        subject: str,
        *,
        agency: str | None = None,
        partner: str | None = None,
        ttl_s: int = DEFAULT_TTL_S,
        now: datetime | None = None,
        use: str = ACCESS,
    ) -> str:
        if role not in ROLES:
            raise ValueError(f"role: must be one of {', '.join(ROLES)}")
        if role in PARTNER_ROLES and (partner is None or agency is not None):
            raise ValueError(f"role {role} acts for a partner: give --partner, not --agency")
        if role not in PARTNER_ROLES and (agency is None or partner is not None):
            raise ValueError(f"role {role} acts for an agency: give --agency, not --partner")
        if not subject.strip():
            raise ValueError("subject: must name the person or system the token is for")
        if not 0 < ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl: must be between 1 and {MAX_TTL_S} seconds")
        if self._key is None:
            raise ValueError("this authority holds no signing key")
        issued = now or datetime.now(UTC)
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "role": role,
            "iat": issued,
            "nbf": issued,
            "exp": issued + timedelta(seconds=ttl_s),
            "jti": str(uuid.uuid4()),
            **({"agency": agency} if agency else {}),
            **({"partner": partner} if partner else {}),
            **({"use": use} if use != ACCESS else {}),
        }
        return jwt.encode(claims, self._key, algorithm="EdDSA")

    def verify(self, token: str, use: str = ACCESS) -> Caller:
        """The caller a valid, unrevoked token names, if it is a token for `use` (a sign-in token calls no API)."""
        try:
            claims = jwt.decode(
                token,
                self._public,
                algorithms=["EdDSA"],  # never "none", never an HMAC keyed with our public key
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "aud", "iss", "sub", "jti"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("token_expired", "the token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenError("wrong_audience", "the token is not for this gateway") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenError("bad_signature", "the token's signature does not verify") from exc
        except jwt.PyJWTError as exc:
            raise TokenError("malformed_token", f"the token is not valid: {type(exc).__name__}") from exc
        role = claims.get("role")
        if role not in ROLES:
            raise TokenError("malformed_token", "the token names no known role")
        if claims.get("use", ACCESS) != use:
            raise TokenError("wrong_use", f"this is not an {use} token" if use == ACCESS else f"not a {use} token")
        if self.is_revoked(claims["jti"]):
            raise TokenError("token_revoked", "the token has been revoked")
        return Caller(
            subject=claims["sub"],
            role=role,
            agency=claims.get("agency"),
            partner=claims.get("partner"),
            token_id=claims["jti"],
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        )

    def revoke(self, token_id: str, reason: str) -> bool:
        """Returns False when the id was already revoked. One statement, so that of two gateways revoking one
        id at once (a sign-in token used twice) exactly one is told it did."""
        inserted = self.db.execute(
            "INSERT INTO revoked_tokens (token_id, revoked_at, reason) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (token_id, datetime.now(UTC).isoformat(), reason),
        )
        return bool(inserted)

    def is_revoked(self, token_id: str) -> bool:
        return bool(self.db.query("SELECT 1 FROM revoked_tokens WHERE token_id = ?", (token_id,)))


def token_id_of(token: str) -> str:
    """The jti of a token, unverified (for `tiphub token revoke` given the token itself)."""
    return str(jwt.decode(token, options={"verify_signature": False}).get("jti", ""))
