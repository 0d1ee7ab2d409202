"""AgencyPublisher: validate, encrypt for the hub, sign (encrypt-then-sign) and publish."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from adapters.kafka.producer import Producer, new_producer
from domain import crypto
from domain.signing import agency_key_id
from schemas.codec import WireCodec
from schemas.convert import FieldError, ReportValidationError, report_from_json
from schemas.envelope import RETRACTION, SUBMITTED, signing_bytes, transform_sensitive
from schemas.registry import RegisteredSchema, load_registry

MAX_LINE_BYTES = 256 * 1024
RETRACTION_REASONS = ("WITHDRAWN", "CORRECTED", "ENTERED_IN_ERROR")


@dataclass(frozen=True)
class FixedEntropy:
    """Deterministic inputs for a conformance test vector. Never for real reports."""

    data_key: bytes
    ephemeral: X25519PrivateKey
    wrap_nonce: bytes
    field_nonces: tuple[bytes, ...]


def seal_report(
    report: dict[str, Any],
    *,
    agency_key: Ed25519PrivateKey,
    signing_key_id: str,
    hub_public: X25519PublicKey,
    hub_key_id: str,
    signed_at: datetime | None = None,
    publisher: str | None = None,
    entropy: FixedEntropy | None = None,
    envelope_schema: RegisteredSchema | None = None,
) -> dict[str, Any]:
    """The SubmittedReport envelope for a validated IndicatorReport record.

    `envelope_schema`: the SubmittedReport version to sign for (default: the latest); the report's
    schema id is the IndicatorReport of the same version. Encode the envelope with the same version."""
    registry = load_registry()
    envelope_schema = envelope_schema or registry.latest(SUBMITTED)
    report_schema = next(v for v in registry.versions("tiphub.IndicatorReport") if v.version == envelope_schema.version)
    report_id = report["report_id"]
    data_key = entropy.data_key if entropy else crypto.new_data_key()
    ephemeral_pub, wrapped = crypto.wrap_data_key(
        hub_public,
        report_id,
        data_key,
        entropy.ephemeral if entropy else None,
        entropy.wrap_nonce if entropy else None,
    )
    nonces = iter(entropy.field_nonces) if entropy else None
    sealed = transform_sensitive(
        report,
        lambda path, value: crypto.seal_field(data_key, report_id, path, value, next(nonces) if nonces else None),
    )
    envelope = {
        **sealed,
        "report_schema_id": report_schema.schema_id,
        "signed_at": signed_at or datetime.now(UTC),
        "signing_key_id": signing_key_id,
        "publisher": publisher,
        "hub_key_id": hub_key_id,
        "ephemeral_public_key": ephemeral_pub,
        "wrapped_data_key": wrapped,
        "signature": b"",
    }
    envelope["signature"] = crypto.sign(agency_key, signing_bytes(envelope, envelope_schema))
    return envelope


def seal_retraction(
    report_id: str,
    *,
    agency: str,
    reason: str,
    corrected_by: str | None,
    agency_key: Ed25519PrivateKey,
    signed_at: datetime | None = None,
) -> dict[str, Any]:
    """A signed ReportRetraction: the agency withdraws or corrects one of its own reports."""
    retraction = {
        "report_id": report_id,
        "source_agency": agency,
        "reason": reason,
        "corrected_by": corrected_by,
        "signed_at": signed_at or datetime.now(UTC),
        "signing_key_id": agency_key_id(agency, agency_key.public_key()),
        "signature": b"",
    }
    retraction["signature"] = crypto.sign(agency_key, signing_bytes(retraction, RETRACTION))
    return retraction


@dataclass(frozen=True)
class PublishOutcome:
    report_id: str | None
    error: str | None = None
    reason: str | None = None

    @property
    def published(self) -> bool:
        return self.error is None


class AgencyPublisher:
    """Publishes one agency's reports to tip.reports.submitted with an idempotent producer.

    Every report is validated before anything leaves the agency; a report that fails is
    answered with the field path and the reason, and nothing is sent for it.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        agency: str,
        agency_key: Ed25519PrivateKey,
        hub_public: X25519PublicKey | None = None,
        hub_key_id: str | None = None,
        client_options: dict[str, Any] | None = None,
        producer: Producer | None = None,
        hub_key: Callable[[], tuple[str, X25519PublicKey]] | None = None,
    ) -> None:
        """Pass `producer` to share one started producer between several agencies (simulation).

        The hub's key to seal for: `hub_key`, asked before every report (it returns (key id, public key)
        for the current epoch: the hub destroys each epoch's key a while after it ends), or a fixed
        `hub_public` with its `hub_key_id`."""
        if hub_key is None:
            if hub_public is None or hub_key_id is None:
                raise ValueError("give hub_key, or hub_public with hub_key_id")
            fixed: tuple[str, X25519PublicKey] = (hub_key_id, hub_public)

            def hub_key() -> tuple[str, X25519PublicKey]:
                return fixed

        self._hub_key: Callable[[], tuple[str, X25519PublicKey]] = hub_key
        self.agency = agency
        self.topic = topic
        self._agency_key = agency_key
        self._key_id = agency_key_id(agency, agency_key.public_key())
        self._codec = WireCodec()
        self._schema = self._codec.registry.latest(SUBMITTED)
        self._owns_producer = producer is None
        self._connection = (bootstrap, client_options)
        self._shared_producer = producer
        self._own_producer: Producer | None = None

    @property
    def _producer(self) -> Producer:
        producer = self._shared_producer or self._own_producer
        if producer is None:
            raise RuntimeError("use `async with AgencyPublisher(...)` or pass a started producer to publish")
        return producer

    async def __aenter__(self) -> AgencyPublisher:
        if self._owns_producer:
            # Created here, inside the event loop: prepare() alone (sealing, signing) needs no producer.
            self._own_producer = new_producer(*self._connection)
            await self._own_producer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._own_producer is not None:
            await self._own_producer.stop()
            self._own_producer = None

    def prepare(self, report_json: Any) -> tuple[str, bytes]:
        """Validate and seal one report in its JSON form; returns (report_id, wire bytes)."""
        record = report_from_json(report_json)
        if record["source_agency"] != self.agency:
            raise ReportValidationError(
                [
                    FieldError(
                        "source_agency",
                        "agency_mismatch",
                        f"is not the publishing agency {self.agency}",
                    )
                ]
            )
        hub_key_id, hub_public = self._hub_key()
        envelope = seal_report(
            record,
            agency_key=self._agency_key,
            signing_key_id=self._key_id,
            hub_public=hub_public,
            hub_key_id=hub_key_id,
        )
        return record["report_id"], self._codec.encode_with(self._schema, envelope)

    async def publish(self, report_json: Any) -> PublishOutcome:
        """Validate, seal and send; returns once the broker has acknowledged the report."""
        try:
            report_id, value = self.prepare(report_json)
        except ReportValidationError as exc:
            return PublishOutcome(None, str(exc), exc.reason)
        await self._producer.send_and_wait(self.topic, key=report_id.encode(), value=value)
        return PublishOutcome(report_id)

    async def publish_many(self, reports: list[Any]) -> list[PublishOutcome]:
        """Pipelined: all valid reports are in flight at once, awaited together."""
        outcomes: list[PublishOutcome] = []
        pending = []
        for report_json in reports:
            try:
                report_id, value = self.prepare(report_json)
            except ReportValidationError as exc:
                outcomes.append(PublishOutcome(None, str(exc), exc.reason))
                continue
            pending.append(await self._producer.send(self.topic, key=report_id.encode(), value=value))
            outcomes.append(PublishOutcome(report_id))
        for future in pending:
            await future
        return outcomes

    async def send_raw(self, key: bytes | None, value: bytes) -> None:
        """Send already-sealed bytes (used by tests and tools that build envelopes themselves)."""
        await self._producer.send_and_wait(self.topic, key=key, value=value)


def parse_jsonl_line(line: str) -> Any:
    """One report from a JSON Lines file, with a clear error for malformed JSON."""
    if len(line.encode()) > MAX_LINE_BYTES:
        raise ReportValidationError([FieldError("", "oversized", f"line longer than {MAX_LINE_BYTES} bytes")])
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise ReportValidationError(
            [FieldError("", "malformed_json", f"not valid JSON ({exc.msg} at column {exc.colno})")]
        ) from None
    except RecursionError:
        raise ReportValidationError([FieldError("", "malformed_json", "JSON nested too deeply")]) from None


def agencies_in(lines: Iterable[str]) -> set[str]:
    """The source agencies the reports of a JSON Lines file claim (lines that are no JSON object are skipped)."""
    found = set()
    for line in lines:
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(value, dict) and isinstance(value.get("source_agency"), str):
            found.add(value["source_agency"])
    return found


NO_SIGNING_KEY = FieldError(
    "source_agency",
    "unknown_agency",
    "no signing key for this agency under TIPHUB_HOME (use --agency)",
)


@dataclass(frozen=True)
class RejectedLine:
    number: int  # from 1
    reason: str
    message: str


@dataclass(frozen=True)
class SealedLine:
    topic: str
    report_id: str
    value: bytes  # the signed envelope, on the wire


def seal_lines(
    lines: Iterable[str], publishers: Mapping[str, AgencyPublisher], agency: str | None = None
) -> Iterator[SealedLine | RejectedLine | None]:
    """One outcome per line of a JSON Lines file, in order: the report sealed by `agency`'s publisher (or,
    without `agency`, by the publisher of the agency it claims), the line's rejection with its reason
    (malformed, invalid, another agency's, an agency without a key), or None for a blank line. Needs no
    broker."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            yield None
            continue
        try:
            report = parse_jsonl_line(line)
            claimed = report.get("source_agency") if isinstance(report, dict) else None
            publisher = publishers[agency] if agency else publishers.get(str(claimed))
            if publisher is None:
                raise ReportValidationError([NO_SIGNING_KEY])
            report_id, value = publisher.prepare(report)
        except ReportValidationError as exc:
            yield RejectedLine(number, exc.reason, str(exc))
            continue
        yield SealedLine(publisher.topic, report_id, value)


@dataclass(frozen=True)
class PublishedLines:
    published: int
    rejected: list[RejectedLine]


async def publish_lines(
    lines: Sequence[str],
    *,
    bootstrap: str,
    publishers_for: Callable[[Producer, list[str]], Mapping[str, AgencyPublisher]],
    agency: str | None = None,
    client_options: dict[str, Any] | None = None,
    on_line: Callable[[], None] = lambda: None,
) -> PublishedLines:
    """Validate, seal and publish the reports of a JSON Lines file (seal_lines), pipelined on one idempotent
    producer; returns once the broker has acknowledged every one sent. Nothing is sent for a rejected line.

    `publishers_for(producer, agencies)` gives the publisher of each agency the reports go out as (`agency`,
    or those the lines claim) on the shared producer. `on_line()` is called as each line is done."""
    producer = new_producer(bootstrap, client_options)
    await producer.start()
    try:
        publishers = publishers_for(producer, [agency] if agency else sorted(agencies_in(lines)))
        rejected: list[RejectedLine] = []
        pending = []
        for outcome in seal_lines(lines, publishers, agency):
            on_line()
            if isinstance(outcome, RejectedLine):
                rejected.append(outcome)
            elif outcome is not None:
                pending.append(await producer.send(outcome.topic, key=outcome.report_id.encode(), value=outcome.value))
        await asyncio.gather(*pending)
        return PublishedLines(len(pending), rejected)
    finally:
        await producer.stop()


async def retract_report(
    report_id: str,
    *,
    agency: str,
    reason: str,
    corrected_by: str | None,
    agency_key: Ed25519PrivateKey,
    bootstrap: str,
    topic: str,
    client_options: dict[str, Any] | None = None,
) -> None:
    """Seal the agency's signed retraction of one of its reports (`reason`: one of RETRACTION_REASONS) and
    publish it on `topic`, the submissions topic, beside the report's submission."""
    retraction = seal_retraction(
        report_id, agency=agency, reason=reason, corrected_by=corrected_by, agency_key=agency_key
    )
    producer = new_producer(bootstrap, client_options)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=report_id.encode(), value=WireCodec().encode(RETRACTION, retraction))
    finally:
        await producer.stop()
