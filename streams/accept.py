"""The verify stage's logic: check, open, validate, pseudonymise and re-seal a submitted report.

Input: one record of tip.reports.submitted. Output: an AcceptedReport record (a candidate: the
accept stage still decides, hub-wide, whether its report_id is new), or a RejectedReport with a
machine-readable reason. The only place the linkage key is used. Plaintext lives here for the
time of one call and never leaves it.

A report's identity is (source_agency, report_id). Its vault keys are named for that identity and
for the signed envelope (`submission_key_prefix`), so a second submission of the same id, by its
agency or by anyone else, never shares a key with the first: erasing what one of them names
cannot destroy the other's keys.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from domain import crypto
from domain.accepted import accepted_projection, registration_token, report_key_id, subject_key_id
from domain.envelope_keys import EnvelopeKeys
from domain.linkage import LinkageKey, Linker
from domain.ports import KeyRequest, KeyVault, SigningKeys
from domain.reloading import Reloaded
from domain.signing import RELAY_AGENCY, RegisteredKey
from schemas.codec import CodecError, WireCodec
from schemas.convert import ReportValidationError, validate_record
from schemas.envelope import RETRACTION, SUBMITTED, signing_bytes, transform_sensitive
from schemas.registry import RegisteredSchema

log = logging.getLogger(__name__)

ACCEPTED = "tiphub.AcceptedReport"
HUB_KEYS_RELOAD_S = 30.0
REJECTED = "tiphub.RejectedReport"
_ENVELOPE_FIELDS = (
    "report_schema_id",
    "signed_at",
    "signing_key_id",
    "publisher",
    "hub_key_id",
    "ephemeral_public_key",
    "wrapped_data_key",
    "signature",
)


@dataclass(frozen=True)
class Submission:
    """What the stage needs of a Kafka record (kept free of client types)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    # Whether the broker set timestamp_ms as it appended the record (LogAppendTime), or the producer did.
    broker_time: bool = True


def submission_key_prefix(agency: str, report_id: str, signature: bytes) -> str:
    """The prefix of every vault key id of one signed submission: `{agency}/{report_id}/{envelope}`.

    The same envelope delivered again gets the same keys; any other submission, even of the same
    report_id, gets its own."""
    return f"{agency}/{report_id}/{hashlib.sha256(signature).hexdigest()[:16]}"


def subject_token(linker: Linker, name: str, dob: str) -> str:
    """Exact keyed token of folded name + date of birth: how an erasure request names a person."""
    return linker.token("SUBJECT", " ".join(sorted(linker.fold(name))) + "|" + dob)


def report_id_of_key(key_id: str) -> str:
    """The report a vault key id belongs to (`{agency}/{report_id}/{envelope}/sN`, or a legacy `{report_id}/sN`)."""
    parts = key_id.split("/")
    return parts[1] if len(parts) == 4 else key_id.rsplit("/", 1)[0]


class _VerifiedFault(Exception):
    """A fault of the hub while opening a submission whose signer was already verified."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


class Rejection(Exception):
    def __init__(self, reason: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.field = field


@dataclass(frozen=True)
class Verdict:
    report_id: str
    accepted: dict[str, Any] | None = None
    rejected: dict[str, Any] | None = None
    retracted: dict[str, Any] | None = None
    claimed_agency: str | None = None  # a rejection's source_agency as the envelope claimed it, verified or not


# Rejected before the signer was verified: the agency the envelope names is only a claim. Such a rejection is
# attributed to nobody, so anyone who can write the topic cannot fill an agency's feed of rejections (or
# change what its status endpoint says of a report id); the audit records the claim.
UNVERIFIED = frozenset(
    {
        "key_mismatch",
        "unknown_agency",
        "unknown_key",
        "key_agency_mismatch",
        "relay_agency_mismatch",
        "revoked_key",
        "bad_signature",
    }
)


@dataclass
class _Opened:
    submission: Submission
    report: dict[str, Any]  # plaintext IndicatorReport record
    signing_key_id: str
    publisher: str | None
    signature: bytes
    # Per linkage key version: each subject's (identifier kind, token) pairs, derived once and used
    # by the vault index, the accepted record and its bridges alike.
    tokens: dict[int, list[list[tuple[str, str]]]] = field(default_factory=dict)


class AcceptStage:
    """Pure logic around two ports: the agency key registry and the key vault."""

    def __init__(
        self,
        *,
        registry: SigningKeys,
        vault: KeyVault,
        hub_key: X25519PrivateKey,
        hub_key_id: str,
        linker: Linker,
        codec: WireCodec | None = None,
        max_envelope_age_s: float = 3600.0,
        max_future_skew_s: float = 300.0,
        hub_keys: Callable[[], dict[str, X25519PrivateKey]] | None = None,
        linkage_keys: Callable[[], Mapping[int, bytes | LinkageKey]] | None = None,
        key_reload_s: float = HUB_KEYS_RELOAD_S,
        envelope_keys: EnvelopeKeys | None = None,
        static_hub_keys: bool = True,
    ) -> None:
        """`hub_keys`: loads every hub key still in use (current and previous); read again when an
        envelope names one not loaded yet, and every `key_reload_s`, so a rotation or a retirement
        on disk takes effect without a restart.

        `linkage_keys`: loads every live linkage key version, read again every `key_reload_s`.
        The latest derives the report's tokens; each earlier one still live derives the same
        material again as a bridge (docs/operations.md, rotation). Without it, `linker` alone.

        `envelope_keys`: the hub's envelope keys per epoch (domain/envelope_keys.py), looked up in the vault
        for every batch and never kept: once one is destroyed, what was sealed for it no longer opens.
        `static_hub_keys`: also open envelopes sealed for the long-lived hub key on disk (an agency that
        cannot fetch epoch keys); what is sealed for it stays readable until that key is retired."""
        self.static_hub_keys = static_hub_keys
        self.envelope_keys = envelope_keys
        self._epoch_keys: dict[str, X25519PrivateKey | None] = {}
        self.registry = registry
        self.vault = vault
        self._hub_keys = Reloaded(hub_keys, key_reload_s) if hub_keys else Reloaded.fixed({hub_key_id: hub_key})
        self._linkage_keys = Reloaded(linkage_keys, key_reload_s) if linkage_keys else None
        self.linker, self.earlier_linkers = (
            Linker.live(self._linkage_keys.value) if self._linkage_keys else (linker, ())
        )
        self.codec = codec or WireCodec()
        self.max_age_ms = int(max_envelope_age_s * 1000)
        self.max_skew_ms = int(max_future_skew_s * 1000)
        # Every registered version of the report is accepted, by the version of its envelope.
        self._report_versions = {e.schema_id: e.version for e in self.codec.registry.versions("tiphub.IndicatorReport")}
        self._latest_envelope_id = self.codec.registry.latest(SUBMITTED).schema_id

    def process(self, batch: list[Submission], now: datetime | None = None) -> list[Verdict]:
        """Verdicts in input order. Vault keys for the whole batch are fetched in one round trip."""
        now = now or datetime.now(UTC)
        self._reload_linkage_keys()
        self._epoch_keys = {}  # looked up again every batch: a destroyed epoch key is gone at once
        opened: list[_Opened | Verdict] = []
        for submission in batch:
            try:
                opened.append(self._open(submission))
            except Rejection as rejection:
                opened.append(self._reject(submission, rejection, now))
            except _VerifiedFault as fault:
                opened.append(self._unprocessable(submission, fault.cause, now))
            except Exception as exc:  # one report's fault must not stop every agency's reports
                opened.append(self._unprocessable(submission, exc, now, verified=False))
        requests: list[KeyRequest] = []
        for i, item in enumerate(opened):
            if isinstance(item, _Opened):
                try:
                    requests.extend(self._key_requests(item))
                except Exception as exc:
                    opened[i] = self._unprocessable(item.submission, exc, now)
        keys = self.vault.get_or_create_many(requests)
        verdicts: list[Verdict] = []
        for item in opened:
            if isinstance(item, Verdict):
                verdicts.append(item)
                continue
            try:
                verdicts.append(self._accept(item, keys, now))
            except Exception as exc:
                verdicts.append(self._unprocessable(item.submission, exc, now))
        return verdicts

    def _unprocessable(self, submission: Submission, exc: Exception, now: datetime, verified: bool = True) -> Verdict:
        """A report the checks passed but the hub failed on: refused (the agency may send it again once the
        fault is fixed) rather than retried for ever, which would stop the stage for everyone behind it.
        Logged by the exception's type only: its message may hold a value of the report. `verified`: whether
        its signer was checked; if not, the rejection is attributed to nobody, like the other unverified ones."""
        log.error("report refused as unprocessable: %s in the verify stage", type(exc).__name__)
        detail = f"the hub could not process this report ({type(exc).__name__}); it was not accepted"
        return self._reject(submission, Rejection("unprocessable", detail), now, attribute=verified)

    # -- opening: every check that can refuse a submission -------------------------------
    def _open(self, submission: Submission) -> _Opened:
        """Check, open and validate a submission; a Rejection if it must be refused. A fault of the hub after its
        signer is verified comes out as `_VerifiedFault`, so that its refusal is attributed to the agency."""
        try:
            written_with, envelope = self.codec.decode(submission.value, expect=SUBMITTED)
        except CodecError as exc:
            raise Rejection(exc.reason, exc.detail) from None
        report_id = envelope["report_id"]
        if submission.key is None or submission.key.decode(errors="replace") != report_id:
            raise Rejection("key_mismatch", "the Kafka key is not the envelope's report_id", "report_id")

        key = self._check_signer(envelope, submission, written_with)
        try:
            return self._open_verified(submission, written_with, envelope, key)
        except Rejection:
            raise
        except Exception as exc:
            raise _VerifiedFault(exc) from exc

    def _open_verified(
        self, submission: Submission, written_with: RegisteredSchema, envelope: dict[str, Any], key: RegisteredKey
    ) -> _Opened:
        report_id = envelope["report_id"]
        if self._report_versions.get(envelope["report_schema_id"]) != written_with.version:
            raise Rejection(
                "unknown_report_schema",
                f"report schema id {envelope['report_schema_id']} is not the report of envelope "
                f"v{written_with.version}",
                "report_schema_id",
            )
        if written_with.schema_id != self._latest_envelope_id:
            # Signed as written; processed in the latest shape (new fields at their defaults).
            try:
                envelope = self.codec.upgrade(submission.value or b"", written_with)
            except CodecError as exc:
                raise Rejection(exc.reason, exc.detail) from None
        hub_key = self._hub_key(envelope["hub_key_id"])
        if hub_key is None and self.envelope_keys is not None and EnvelopeKeys.is_epoch_key(envelope["hub_key_id"]):
            raise Rejection(
                "hub_key_retired",
                "sealed for an envelope key the hub has destroyed (its epoch is over): seal it for the current key",
                "hub_key_id",
            )
        if hub_key is None and not self.static_hub_keys and not EnvelopeKeys.is_epoch_key(envelope["hub_key_id"]):
            detail = "this hub opens only envelopes sealed for its envelope key of the epoch (GET /v1/hub/keys)"
            raise Rejection("wrong_hub_key", detail, "hub_key_id")
        if hub_key is None:
            raise Rejection("wrong_hub_key", f"sealed for {envelope['hub_key_id']}, not this hub", "hub_key_id")
        try:
            data_key = crypto.unwrap_data_key(
                hub_key,
                report_id,
                envelope["ephemeral_public_key"],
                envelope["wrapped_data_key"],
            )
        except crypto.DecryptionError as exc:
            raise Rejection("key_unwrap_failed", str(exc), "wrapped_data_key") from None

        def open_field(path: str, blob: bytes) -> str:
            try:
                return crypto.unseal_field(data_key, report_id, path, blob)
            except crypto.DecryptionError:
                raise Rejection("field_decrypt_failed", "sealed value does not open at this field", path) from None
            except UnicodeDecodeError:
                raise Rejection("invalid_utf8", "sealed value is not UTF-8 text", path) from None

        report = {k: v for k, v in envelope.items() if k not in _ENVELOPE_FIELDS}
        report = transform_sensitive(report, open_field)
        try:
            validate_record(report)
        except ReportValidationError as exc:
            raise Rejection(exc.reason, str(exc), exc.field) from None
        opened = _Opened(submission, report, key.key_id, envelope["publisher"], envelope["signature"])
        self._derive_all(opened)
        return opened

    def _derive_all(self, opened: _Opened) -> None:
        """Derive the report's tokens and name material with every live key version now, so that a value
        one of them cannot key is this report's rejection, naming the field, and never a fault of the batch."""
        for linker in self.linkers:
            for i, subject in enumerate(opened.report["subjects"]):
                for j, ident in enumerate(subject["identifiers"]):
                    try:
                        linker.identifier_token(
                            ident["kind"], ident["value"], ident.get("issuer"), subject.get("nationality")
                        )
                    except ValueError as exc:  # IdentifierError; its message never holds the value
                        raise Rejection(
                            "invalid_identifier", str(exc), f"subjects[{i}].identifiers[{j}].value"
                        ) from None
                try:
                    linker.blocking_keys(subject.get("name"), subject.get("date_of_birth"))
                    linker.name_dob_encoding(subject.get("name"), subject.get("date_of_birth"))
                except ValueError:
                    raise Rejection(
                        "invalid_name", "the name or date of birth cannot be encoded", f"subjects[{i}].name"
                    ) from None
            self._subject_tokens(opened, linker)

    def _reload_linkage_keys(self) -> None:
        """Between batches only: every report of a batch is derived with the same key versions."""
        if self._linkage_keys is None:
            return
        keys = self._linkage_keys.value
        if self._linkage_keys.current() is not keys:
            self.linker, self.earlier_linkers = Linker.live(
                self._linkage_keys.value, reuse=(self.linker, *self.earlier_linkers)
            )

    @property
    def linkers(self) -> tuple[Linker, ...]:
        """Every live linkage key version, the current one first."""
        return (self.linker, *self.earlier_linkers)

    def _hub_key(self, key_id: str) -> X25519PrivateKey | None:
        if self.envelope_keys is not None and EnvelopeKeys.is_epoch_key(key_id):
            if key_id not in self._epoch_keys:
                self._epoch_keys[key_id] = self.envelope_keys.private(key_id)
            return self._epoch_keys[key_id]
        if not self.static_hub_keys:
            return None
        keys = self._hub_keys.current()
        if key_id not in keys and self._hub_keys.reload(unless_younger_than_s=1.0):
            keys = self._hub_keys.value  # a rotation since the last read
        return keys.get(key_id)

    def _check_signer(
        self, envelope: dict[str, Any], submission: Submission, schema: RegisteredSchema
    ) -> RegisteredKey:
        """Registered, unrevoked key of the claimed agency, a valid signature, a fresh envelope."""
        agency = envelope["source_agency"]
        key = self.registry.get(envelope["signing_key_id"])
        if key is None:
            known = any(k.agency == agency for k in self.registry.all())
            raise Rejection(
                "unknown_key" if known else "unknown_agency",
                f"signing key {envelope['signing_key_id']} is not registered"
                if known
                else f"no key is registered for agency {agency}",
                "signing_key_id",
            )
        if key.agency == RELAY_AGENCY:
            # The gateway relays for a publisher it authenticated; it is trusted for that publisher's agency only.
            relayed_for = (envelope.get("publisher") or "").rpartition("@")[2]
            if relayed_for != agency:
                detail = "the relay did not authenticate a publisher of this agency"
                raise Rejection("relay_agency_mismatch", detail, "publisher")
        elif key.agency != agency:
            raise Rejection("key_agency_mismatch", f"key belongs to {key.agency}, not {agency}", "signing_key_id")
        # A revoked key is refused from the moment of revocation, whenever the envelope says it was signed or
        # sent: after a leak, nothing signed with the key can be told from the thief's. (Reports still waiting
        # in the topic when a key is revoked are refused too; the agency sends them again, signed anew.)
        if key.revoked_by(time.time()):
            raise Rejection("revoked_key", f"signing key {key.key_id} is revoked", "signing_key_id")
        # Freshness against when the broker received it: its append time (tip.reports.submitted is
        # LogAppendTime), so a backlog is not stale. A time the producer set could be backdated: on a topic
        # not configured LogAppendTime the hub judges by its own clock (a backlog may then be refused).
        received_ms = submission.timestamp_ms if submission.broker_time else int(time.time() * 1000)
        if not crypto.verify(key.public_key, envelope["signature"], signing_bytes(envelope, schema)):
            raise Rejection("bad_signature", "signature does not verify over the envelope", "signature")
        signed_ms = int(envelope["signed_at"].timestamp() * 1000)
        if received_ms - signed_ms > self.max_age_ms:
            raise Rejection("stale_envelope", "signed_at is older than the accepted envelope age", "signed_at")
        if signed_ms - received_ms > self.max_skew_ms:
            raise Rejection("future_envelope", "signed_at is in the future", "signed_at")
        return key

    def verify_retraction(self, submission: Submission, now: datetime) -> Verdict:
        """A retraction signed like a report by the agency it names. Whether that agency owns the report
        is decided hub-wide by the accept stage (`check_retraction_owner`)."""
        try:
            written_with, retraction = self.codec.decode(submission.value, expect=RETRACTION)
            report_id = retraction["report_id"]
            if submission.key is None or submission.key.decode(errors="replace") != report_id:
                raise Rejection("key_mismatch", "the Kafka key is not the retraction's report_id", "report_id")
            key = self._check_signer(retraction, submission, written_with)
        except CodecError as exc:
            return self._reject(submission, Rejection(exc.reason, exc.detail), now)
        except Rejection as rejection:
            return self._reject(submission, rejection, now)
        return Verdict(
            report_id,
            retracted={
                "report_id": report_id,
                "source_agency": retraction["source_agency"],
                "reason": retraction["reason"],
                "corrected_by": retraction["corrected_by"],
                "signing_key_id": key.key_id,
                "retracted_at": now,
            },
        )

    def _reject(self, submission: Submission, rejection: Rejection, now: datetime, attribute: bool = True) -> Verdict:
        """A rejection names the report id and agency the submission claimed, each cut to CLAIM_CHARS: whoever can
        write the topic chooses them, unsigned, and a 5,000-character id passed into every store the rejection
        and its audit event reach (PostgreSQL refuses an index entry over 2,704 bytes)."""
        report_id = (submission.key or b"").decode(errors="replace")[:CLAIM_CHARS]
        agency = None
        if rejection.reason not in (
            "not_wire_format",
            "unknown_schema_id",
            "undecodable",
            "oversized",
            "empty_value",
            "wrong_schema",
        ):
            try:
                _, envelope = self.codec.decode(submission.value)
                agency = _claim(envelope.get("source_agency"))
                report_id = _claim(envelope.get("report_id")) or report_id
            except CodecError:
                pass
        attributed = None if rejection.reason in UNVERIFIED or not attribute else agency
        record = rejection_record(submission, report_id, attributed, rejection, now)
        return Verdict(report_id, rejected=record, claimed_agency=agency)

    # -- accepting: tokens, derived facts, re-sealing under vault keys -------------------
    @staticmethod
    def _subject_tokens(opened: _Opened, linker: Linker) -> list[list[tuple[str, str]]]:
        """Per subject: (identifier kind, linkage token) for each identifier, under `linker`'s version."""
        found = opened.tokens.get(linker.version)
        if found is None:
            found = opened.tokens[linker.version] = [
                [
                    (
                        ident["kind"],
                        linker.identifier_token(
                            ident["kind"], ident["value"], ident.get("issuer"), subject.get("nationality")
                        ),
                    )
                    for ident in subject["identifiers"]
                ]
                for subject in opened.report["subjects"]
            ]
        return found

    def _key_requests(self, opened: _Opened) -> list[KeyRequest]:
        """The vault keys of a report, indexed for erasure by the tokens of every live linkage key version."""
        report_id = opened.report["report_id"]
        prefix = self._key_prefix(opened)
        # The report's own key (narrative, registrations: free text that may name anyone in it) goes with
        # the key of any of its subjects: erasing one person shreds them.
        subject_keys = tuple(subject_key_id(prefix, i) for i in range(len(opened.report["subjects"])))
        requests = [KeyRequest(report_key_id(prefix), report_id, (), subject_keys)]
        per_version = [self._subject_tokens(opened, linker) for linker in self.linkers]
        for i, subject in enumerate(opened.report["subjects"]):
            index = [token for tokens in per_version for _, token in tokens[i]]
            name, dob = subject.get("name"), subject.get("date_of_birth")
            if name and dob:
                index += [self.subject_token(name, dob, linker) for linker in self.linkers]
            requests.append(KeyRequest(subject_key_id(prefix, i), report_id, tuple(index)))
        return requests

    @staticmethod
    def _key_prefix(opened: _Opened) -> str:
        return submission_key_prefix(opened.report["source_agency"], opened.report["report_id"], opened.signature)

    def subject_token(self, name: str, dob: str, linker: Linker | None = None) -> str:
        return subject_token(linker or self.linker, name, dob)

    def _bridge(self, opened: _Opened, linker: Linker) -> dict[str, Any]:
        """The report's link material derived with an earlier, still live linkage key version."""
        report = opened.report
        return {
            "version": linker.version,
            "subjects": [
                {
                    "identifier_tokens": [token for _, token in tokens],
                    "name_dob_encoding": linker.name_dob_encoding(subject.get("name"), subject.get("date_of_birth")),
                    "blocking_keys": linker.blocking_keys(subject.get("name"), subject.get("date_of_birth")),
                }
                for subject, tokens in zip(report["subjects"], self._subject_tokens(opened, linker), strict=True)
            ],
            "registration_tokens": [registration_token(linker, org) for org in report["organisations"]],
        }

    def _accept(self, opened: _Opened, keys: dict[str, bytes], now: datetime) -> Verdict:
        report = opened.report
        report_id = report["report_id"]

        def seal(key_id: str, path: str, value: str) -> bytes:
            return crypto.seal_field(keys[key_id], report_id, path, value)

        accepted = {
            **accepted_projection(
                report,
                key_prefix=self._key_prefix(opened),
                seal=seal,
                tokens=self._subject_tokens(opened, self.linker),
                linker=self.linker,
                accepted_at=now,
            ),
            "linkage_key_version": self.linker.version,
            "linkage_bridges": [self._bridge(opened, linker) for linker in self.earlier_linkers],
            "signing_key_id": opened.signing_key_id,
            "publisher": opened.publisher,
        }
        return Verdict(report_id, accepted=accepted)


class SourceRef(Protocol):
    """Where a submission was read: a Submission, or the coordinates the verify stage passes on."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


CLAIM_CHARS = 64  # of a report id or an agency an unverified submission claims (a UUID is 36)


def _claim(value: object) -> str | None:
    return value[:CLAIM_CHARS] if isinstance(value, str) else None


def rejection_record(
    submission: SourceRef, report_id: str, agency: str | None, rejection: Rejection, now: datetime
) -> dict[str, Any]:
    return {
        "report_id": report_id[:CLAIM_CHARS],  # a signed retraction's id is not checked as a UUID before this
        "source_agency": agency,
        "reason": rejection.reason,
        "field": rejection.field,
        "detail": rejection.detail,
        "rejected_at": now,
        "source_topic": submission.topic,
        "source_partition": submission.partition,
        "source_offset": submission.offset,
    }
