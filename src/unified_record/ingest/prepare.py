"""Turning one raw inbound message into validated FHIR resources: pure and picklable.

This is the CPU-heavy part of ingest (parsing, mapping, FHIR validation), kept free of
database and key access so a process pool can run it on every core. The pipeline's workers
then seal each resource in advance (`store.batch.seal_new`), which does need the keys.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unified_record.fhir.validation import InvalidResource, validate_resource
from unified_record.ingest.csv_adapter import parse_csv_message
from unified_record.ingest.fhir_bundle import map_bundle
from unified_record.ingest.mapping import FeedMapping, MappedRecord, RecordError, map_record
from unified_record.ingest.search_values import index_values
from unified_record.store.batch import Sealed
from unified_record.store.crypto import Cipher
from unified_record.store.resources import open_body


@dataclass
class PreparedResource:
    """A mapped, validated resource. Once `sealed` (encrypted in advance as a new resource,
    see the pipeline), `resource` and `index` are dropped: the envelope holds the body and
    the sealed index its hashes: that is all a worker holds until it stores the batch (or, for
    a database only the main process can reach, sends it there)."""

    resource: dict[str, Any] | None
    source_record_id: str
    labels: list[str]
    index: list[tuple[str, str]]
    sealed: Sealed | None = None

    @property
    def resource_type(self) -> str:
        if self.sealed is not None:
            return self.sealed.resource_type
        assert self.resource is not None
        return str(self.resource["resourceType"])

    @property
    def id(self) -> str:
        if self.sealed is not None:
            return self.sealed.id
        assert self.resource is not None
        return str(self.resource["id"])

    def body(self, cipher: Cipher) -> dict[str, Any]:
        """The body as prepared (sealed: as sealed, with labels and meta of version 1)."""
        if self.resource is not None:
            return self.resource
        assert self.sealed is not None
        return open_body(cipher, self.sealed.envelope, self.sealed.resource_type,
                         self.sealed.id, 1)


@dataclass
class Prepared:
    """The outcome for one message: resources to store, or the reason it was not accepted."""

    source_org: str = ""
    source_record_id: str | None = None
    resources: list[PreparedResource] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    retired_record_id: str | None = None
    error: str | None = None


def prepare(mapping: FeedMapping, raw: bytes, sender_org: str | None = None) -> Prepared:
    """Parse, map and validate; never raises for bad input (the reason is in `error`).

    `sender_org`: for FHIR feeds, the authenticated sender (see `map_bundle`)."""
    try:
        mapped = _map(mapping, raw, sender_org)
        resources = []
        for item in mapped.resources:
            if mapping.format != "fhir":  # map_bundle validates each entry itself (a batch
                _validate(item.resource)  # Bundle leaves an invalid entry out, with a warning)
            resources.append(PreparedResource(item.resource, item.source_record_id, item.labels,
                                              index_values(item.resource)))
    except RecordError as exc:
        return Prepared(error=exc.reason)
    except Exception as exc:  # a fault of this service, not of the message: quarantine it
        return Prepared(error=f"could not be prepared: {_fault(exc)}; replay it once fixed")
    return Prepared(mapped.source_org, mapped.source_record_id, resources, mapped.warnings,
                    mapped.retired_record_id)


def _map(mapping: FeedMapping, raw: bytes, sender_org: str | None) -> MappedRecord:
    if mapping.format == "csv":
        return map_record(mapping, parse_csv_message(raw, mapping.csv))
    if mapping.format == "fhir":
        return map_bundle(mapping, raw, sender_org)
    from unified_record.ingest.hl7_record import parse_hl7_record

    return map_record(mapping, parse_hl7_record(raw))


def _fault(exc: Exception) -> str:
    """The exception's type and where it was raised; never its message (it may quote data)."""
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    return f"{type(exc).__name__}{where}"


def _validate(resource: dict[str, Any]) -> None:
    try:
        validate_resource(resource)
    except InvalidResource as exc:
        raise RecordError(str(exc)) from None
