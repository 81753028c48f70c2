"""Governance reports from the audit log: who accessed a client's record, when and why;
denied accesses; a client's audit trail as CSV or as a FHIR Bundle (subject access
requests). Entries hold ids and codes only, so the reports do too.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, fields
from typing import Any

from unified_record.audit.log import AuditLog, AuditRecord
from unified_record.fhir.validation import validate_resource

__all__ = ["AccessLine", "access_line", "client_trail", "trail_bundle", "trail_csv"]


@dataclass(frozen=True)
class AccessLine:
    """One audit entry, flattened for a person to read."""

    seq: int
    recorded: str
    client_id: str
    event: str  # read, search-type, consent-recorded, break-glass-granted, ...
    decision: str
    user: str
    organisation: str
    role: str
    oauth_client: str
    purpose: str
    returned: int
    withheld: int
    break_glass: bool
    source_address: str


def client_trail(log: AuditLog, client_ids: Iterable[str]) -> list[AuditRecord]:
    """Every entry about these ids in chain order. Pass the client and every id merged into
    it (`consent.enforcement.merged_client_ids`), so accesses before a merge are not lost."""
    return sorted((r for cid in set(client_ids) for r in log.entries(client_id=cid)),
                  key=lambda r: r.seq)


def access_line(record: AuditRecord) -> AccessLine:
    event = record.event
    user = organisation = role = oauth_client = address = ""
    for agent in event.get("agent") or []:
        code = _code(agent.get("type"))
        ident = ((agent.get("who") or {}).get("identifier") or {}).get("value", "")
        if agent.get("requestor"):
            user = ident
            role = _code((agent.get("role") or [{}])[0])
        elif code == "organisation":
            organisation = ident
        elif code == "110153":
            oauth_client = ident
            address = (agent.get("network") or {}).get("address", "")
    outcomes = [detail.get("valueString") for entity in event.get("entity") or []
                for detail in entity.get("detail") or [] if detail.get("type") == "outcome"]
    purposes = [_code(p) for p in event.get("purposeOfEvent") or []]
    return AccessLine(
        seq=record.seq, recorded=record.recorded.isoformat(timespec="seconds"),
        client_id=record.client_id or "", event=str(event["subtype"][0]["code"]),
        decision=record.decision, user=user, organisation=organisation, role=role,
        oauth_client=oauth_client, purpose=",".join(purposes),
        returned=outcomes.count("returned"), withheld=outcomes.count("withheld"),
        break_glass=record.break_glass, source_address=address)


def trail_csv(lines: Iterable[AccessLine]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([f.name for f in fields(AccessLine)])
    writer.writerows(astuple(line) for line in lines)
    return out.getvalue()


def trail_bundle(records: Sequence[AuditRecord]) -> dict[str, Any]:
    """The AuditEvents as a FHIR collection Bundle (valid R4)."""
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{_uuid(r.event_id)}", "resource": r.event}
                  for r in records],
    }
    validate_resource(bundle)
    return bundle


def _code(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    codings = concept.get("coding") or [concept]
    return str(codings[0].get("code", "")) if codings else ""


def _uuid(hex32: str) -> str:
    h = hex32.replace("-", "")
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}" if len(h) == 32 else hex32
