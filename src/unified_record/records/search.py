"""FHIR search over the encrypted store: strict parameter parsing, then matching through the
blind index (keyed hashes) and exact filters on the decrypted candidates.

What is supported (and listed in the CapabilityStatement) is in `PATIENT_PARAMS`,
`CLINICAL_PARAMS` and `RESULT_PARAMS`; anything else is refused (`SearchError`, strict
handling). Notes a caller needs:

* Patient searches return unified clients (golden Patients) by default; `view=source`
  returns the source Patients instead. A client matches when one of its source records
  matches every parameter; `_id` and an identifier in the client-id system name the client.
* String parameters (`family`, `given`, `name`) match a whole name with case, accents and
  punctuation folded (the blind index holds hashes of folded names, so prefixes cannot be
  searched); `phonetic` matches the Soundex of the family name.
* `birthdate` and `date` take the prefixes eq, ne, lt, gt, le, ge, sa, eb, ap and partial
  dates (2001, 2001-04, 2001-04-05, or a dateTime); a `birthdate` range is searched through
  the hashed birth years it spans.
* `gender`, `date`, `code` and `status` filter decrypted candidates; on their own they read
  every resource of the type.
* Clinical and social-care resources are found by `patient`/`subject` (a source Patient,
  or a unified client id, which stands for all its source Patients), `_id`, `date`, `code`
  (`system|code`, `code` or `system|`) and `status`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from unified_record.fhir.uk_core import NHS_NUMBER_SYSTEM
from unified_record.ingest.search_values import fold_name, postcode_key, soundex
from unified_record.linkage.golden import (
    DEFAULT_CLIENT_SYSTEM,
    SourcePatient,
    assemble_golden,
    golden_patient,
)
from unified_record.store.crypto import BlindIndexer
from unified_record.store.membership import Membership
from unified_record.store.models import ClientMemberRow, ClientRow, ResourceRow, SearchIndexRow
from unified_record.store.resources import ResourceRepository

__all__ = [
    "CLINICAL_PARAMS",
    "CLINICAL_TYPES",
    "PATIENT_PARAMS",
    "RESULT_PARAMS",
    "Criterion",
    "DateRange",
    "Found",
    "SearchError",
    "SearchRequest",
    "Visible",
    "client_sources",
    "find",
    "golden_found",
    "included",
    "load_found",
    "parse_date",
    "parse_search",
    "sort_key",
    "unified_patient",
]

PATIENT_PARAMS = ("_id", "identifier", "family", "given", "name", "phonetic", "birthdate",
                  "gender", "address-postalcode", "view")
CLINICAL_PARAMS = ("_id", "patient", "subject", "date", "code", "status")
RESULT_PARAMS = ("_count", "_sort", "_summary", "_include", "_revinclude", "_page")
MAX_COUNT = 200
DEFAULT_COUNT = 20

# Where each clinical type keeps the values its search parameters look at.
DATE_PATHS: dict[str, tuple[str, ...]] = {
    "Encounter": ("period.start",),
    "Condition": ("onsetDateTime", "recordedDate"),
    "Observation": ("effectiveDateTime", "effectivePeriod.start", "issued"),
    "MedicationStatement": ("effectiveDateTime", "effectivePeriod.start", "dateAsserted"),
    "AllergyIntolerance": ("onsetDateTime", "recordedDate"),
    "Flag": ("period.start",),
    "EpisodeOfCare": ("period.start",),
    "CarePlan": ("period.start", "created"),
    "ServiceRequest": ("occurrenceDateTime", "authoredOn"),
    "Consent": ("dateTime",),
}
CODE_PATHS: dict[str, str] = {
    "Encounter": "type", "Condition": "code", "Observation": "code",
    "MedicationStatement": "medicationCodeableConcept", "AllergyIntolerance": "code",
    "Flag": "code", "EpisodeOfCare": "type", "CarePlan": "category",
    "ServiceRequest": "code", "Consent": "category",
}
STATUS_PATHS: dict[str, str] = {
    "Encounter": "status", "Condition": "clinicalStatus", "Observation": "status",
    "MedicationStatement": "status", "AllergyIntolerance": "clinicalStatus", "Flag": "status",
    "EpisodeOfCare": "status", "CarePlan": "status", "ServiceRequest": "status",
    "Consent": "status",
}
SUBJECT_PATHS: dict[str, str] = {"AllergyIntolerance": "patient", "EpisodeOfCare": "patient",
                                 "Consent": "patient"}
CLINICAL_TYPES = tuple(sorted(DATE_PATHS))
PATIENT_SORTS = ("_id", "birthdate", "family", "given", "_lastUpdated")
CLINICAL_SORTS = ("_id", "date", "_lastUpdated")
_PREFIXES = ("eq", "ne", "lt", "gt", "le", "ge", "sa", "eb", "ap")
_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?"
                      r"(Z|[+-]\d{2}:\d{2})?)?)?)?$")
_FIRST_YEAR = 1880
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SearchError(ValueError):
    """A search the server does not support or cannot parse (answered with 400)."""


@dataclass(frozen=True)
class DateRange:
    """A half-open interval of instants [start, end) that a (partial) date stands for."""

    start: datetime
    end: datetime

    def matches(self, prefix: str, target: DateRange) -> bool:
        """FHIR date-search semantics of `prefix` against a target value's range."""
        eq = self.start <= target.start and target.end <= self.end
        match prefix:
            case "eq":
                return eq
            case "ne":
                return not eq
            case "gt":
                return target.end > self.end
            case "lt":
                return target.start < self.start
            case "ge":
                return target.end > self.end or eq
            case "le":
                return target.start < self.start or eq
            case "sa":
                return target.start >= self.end
            case "eb":
                return target.end <= self.start
            case _:  # ap: overlapping
                return target.start < self.end and self.start < target.end


def parse_date(text: str) -> DateRange:
    """The range a FHIR date or dateTime stands for; ValueError if it is not one."""
    match = _DATE_RE.match(text.strip())
    if match is None:
        raise ValueError(f"not a FHIR date: {text!r}")
    year, month, day, hour, minute, second, zone = match.groups()
    tz = UTC
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        tz = UTC if zone[1:] == "00:00" else _offset(sign, zone[1:])
    try:
        if month is None:
            start = datetime(int(year), 1, 1, tzinfo=UTC)
            return DateRange(start, start.replace(year=start.year + 1))
        if day is None:
            start = datetime(int(year), int(month), 1, tzinfo=UTC)
            end = (start.replace(year=start.year + 1, month=1) if start.month == 12
                   else start.replace(month=start.month + 1))
            return DateRange(start, end)
        if hour is None:
            start = datetime(int(year), int(month), int(day), tzinfo=UTC)
            return DateRange(start, start + timedelta(days=1))
        start = datetime(int(year), int(month), int(day), int(hour), int(minute),
                         int(second or 0), tzinfo=tz).astimezone(UTC)
        return DateRange(start, start + (timedelta(seconds=1) if second else
                                         timedelta(minutes=1)))
    except (ValueError, OverflowError):  # 9999-12-31 has no following day
        raise ValueError(f"not a FHIR date: {text!r}") from None


def _offset(sign: int, hhmm: str) -> Any:
    from datetime import timezone

    hours, minutes = hhmm.split(":")
    return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes)))


@dataclass(frozen=True)
class Criterion:
    """One parameter occurrence: its name, modifier and comma-separated values (OR)."""

    name: str
    modifier: str | None
    values: tuple[str, ...]


@dataclass
class SearchRequest:
    resource_type: str
    criteria: list[Criterion] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (param, descending)
    summary_count: bool = False
    includes: list[tuple[str, str]] = field(default_factory=list)  # (source type, param)
    revincludes: list[tuple[str, str]] = field(default_factory=list)  # (target type, param)
    page: str | None = None
    view: str = "unified"  # Patient only: unified clients or source records


def parse_search(resource_type: str, items: Iterable[tuple[str, str]]) -> SearchRequest:
    """Parse query parameters strictly: any unknown parameter, modifier or value is refused."""
    patient = resource_type == "Patient"
    if not patient and resource_type not in CLINICAL_TYPES:
        raise SearchError(f"search is not supported on {resource_type}")
    allowed = PATIENT_PARAMS if patient else CLINICAL_PARAMS
    request = SearchRequest(resource_type)
    for raw_name, raw_value in items:
        name, _, modifier = raw_name.partition(":")
        value = raw_value.strip()
        if _CONTROL.search(raw_name) or _CONTROL.search(value):
            # No FHIR value holds them, and PostgreSQL refuses NUL in a query parameter.
            raise SearchError(f"search parameter {name!r} contains control characters")
        if name in RESULT_PARAMS:
            _result_param(request, name, modifier, value)
            continue
        if name not in allowed:
            raise SearchError(f"unknown or unsupported search parameter {raw_name!r} for "
                              f"{resource_type}")
        if modifier and not (modifier == "exact" and name in ("family", "given", "name")):
            raise SearchError(f"unsupported modifier :{modifier} on {name!r}")
        if not value:
            raise SearchError(f"search parameter {name!r} has no value")
        if name == "view":
            if value not in ("unified", "source"):
                raise SearchError("view must be 'unified' (clients) or 'source' (records)")
            request.view = value
            continue
        values = tuple(v.strip() for v in value.split(","))
        if name in ("birthdate", "date"):
            for v in values:
                _, text = _split_prefix(v)
                try:
                    parse_date(text)
                except ValueError as exc:
                    raise SearchError(f"{name}: {exc}") from None
        if name == "gender" and not set(values) <= {"male", "female", "other", "unknown"}:
            raise SearchError("gender must be male, female, other or unknown")
        request.criteria.append(Criterion(name, modifier or None, values))
    return request


def _result_param(request: SearchRequest, name: str, modifier: str, value: str) -> None:
    if modifier:
        raise SearchError(f"{name} takes no modifier")
    match name:
        case "_count":
            if not (value.isascii() and value.isdigit()):
                raise SearchError("_count must be a whole number")
            request.count = min(int(value), MAX_COUNT)
        case "_summary":
            if value != "count":
                raise SearchError("only _summary=count is supported")
            request.summary_count = True
        case "_sort":
            allowed = PATIENT_SORTS if request.resource_type == "Patient" else CLINICAL_SORTS
            for key in value.split(","):
                descending = key.startswith("-")
                key = key.removeprefix("-")
                if key not in allowed:
                    raise SearchError(f"cannot sort {request.resource_type} by {key!r}; use "
                                      f"{', '.join(allowed)}")
                request.sort.append((key, descending))
        case "_include":
            source, param = _reference_param(value)
            if source != request.resource_type or request.resource_type == "Patient":
                raise SearchError(f"unsupported _include {value!r}: use "
                                  f"{request.resource_type}:patient or :subject")
            request.includes.append((source, param))
        case "_revinclude":
            source, param = _reference_param(value)
            if request.resource_type != "Patient":
                raise SearchError("_revinclude is supported on Patient searches")
            request.revincludes.append((source, param))
        case "_page":
            request.page = value


def _reference_param(value: str) -> tuple[str, str]:
    source, _, param = value.partition(":")
    if source not in CLINICAL_TYPES or param not in ("patient", "subject"):
        raise SearchError(f"unsupported include {value!r}: use <Type>:patient or "
                          "<Type>:subject")
    return source, param


def _split_prefix(value: str) -> tuple[str, str]:
    if value[:2] in _PREFIXES and not value[:2].isdigit():
        return value[:2], value[2:]
    return "eq", value


# -- matching ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """A matched resource and what consent and sorting need (no further decryption)."""

    resource: dict[str, Any]
    source_feed: str
    source_org: str | None
    security_labels: tuple[str, ...]
    last_updated: datetime


# Each Found's body as the caller may see it, or None where withheld (decided, not audited).
Visible = Callable[[Sequence[Found]], list[dict[str, Any] | None]]


def find(session: Session, repository: ResourceRepository, blind_index: BlindIndexer,
         request: SearchRequest, client_system: str = DEFAULT_CLIENT_SYSTEM,
         visible: Visible | None = None) -> list[Found]:
    """Every match of `request`, sorted (paging and consent filtering are the caller's;
    `visible` decides which source Patients a unified client is assembled from)."""
    if request.resource_type == "Patient":
        sources = _patients(session, repository, blind_index, request, client_system)
        found = (_clients(session, repository, sources, request, client_system, visible)
                 if request.view == "unified" else sources)
    else:
        found = _clinical(session, repository, blind_index, request)
    return sorted(found, key=sort_key(request))


def _hashes(session: Session, blind_index: BlindIndexer, resource_type: str, param: str,
            values: Iterable[str]) -> set[str]:
    digests = [blind_index.digest(param, v) for v in values if v]
    if not digests:
        return set()
    return set(session.scalars(sa.select(SearchIndexRow.resource_id).where(
        SearchIndexRow.resource_type == resource_type, SearchIndexRow.param == param,
        SearchIndexRow.value_hash.in_(digests))))


def _all_ids(session: Session, resource_type: str) -> set[str]:
    return set(session.scalars(sa.select(ResourceRow.id).where(
        ResourceRow.resource_type == resource_type, ResourceRow.deleted.is_(False))))


def _patients(session: Session, repository: ResourceRepository, blind_index: BlindIndexer,
              request: SearchRequest, client_system: str) -> list[Found]:
    """Source Patients matching every criterion."""
    candidates: set[str] | None = None

    def narrow(ids: set[str]) -> None:
        nonlocal candidates
        candidates = ids if candidates is None else candidates & ids

    filters: list[Callable[[dict[str, Any]], bool]] = []
    for c in request.criteria:
        match c.name:
            case "_id":
                if request.view == "unified":
                    narrow(_members(session, c.values))
                else:
                    narrow(set(c.values))
            case "identifier":
                narrow(_by_identifier(session, blind_index, c.values, request.view,
                                      client_system))
            case "family" | "given":
                narrow(_hashes(session, blind_index, "Patient", c.name,
                               [fold_name(v) for v in c.values]))
            case "name":
                folded = [fold_name(v) for v in c.values]
                narrow(_hashes(session, blind_index, "Patient", "family", folded)
                       | _hashes(session, blind_index, "Patient", "given", folded))
            case "phonetic":
                narrow(_hashes(session, blind_index, "Patient", "phonetic",
                               [soundex(v) for v in c.values]))
            case "address-postalcode":
                narrow(_hashes(session, blind_index, "Patient", "postcode",
                               [postcode_key(v) for v in c.values]))
            case "birthdate":
                narrow(_by_birthdate(session, blind_index, c.values))
                filters.append(_date_filter(c.values, ("birthDate",)))
            case "gender":
                filters.append(_gender_filter(set(c.values)))
    ids = candidates if candidates is not None else _all_ids(session, "Patient")
    return load_found(session, repository, "Patient", ids, filters)


def _gender_filter(wanted: set[str]) -> Callable[[dict[str, Any]], bool]:
    return lambda body: body.get("gender") in wanted


def _members(session: Session, client_ids: Iterable[str]) -> set[str]:
    return set(session.scalars(sa.select(ClientMemberRow.unique_id).where(
        ClientMemberRow.client_id.in_(list(client_ids)))))


def _by_identifier(session: Session, blind_index: BlindIndexer, values: Iterable[str],
                   view: str, client_system: str) -> set[str]:
    found: set[str] = set()
    for value in values:
        system, bar, code = value.rpartition("|")
        if not bar:
            system, code = "", value
        if view == "unified" and system in ("", client_system):
            found |= _members(session, [code])
        systems = [system] if system else [NHS_NUMBER_SYSTEM]
        found |= _hashes(session, blind_index, "Patient", "identifier",
                         [f"{s}|{code.strip()}" for s in systems])
    return found


def _by_birthdate(session: Session, blind_index: BlindIndexer, values: Iterable[str]
                  ) -> set[str]:
    """Candidates by exact birth date, or by every birth year a range could touch."""
    found: set[str] = set()
    this_year = datetime.now(UTC).year
    for value in values:
        prefix, text = _split_prefix(value)
        wanted = parse_date(text)
        if prefix == "eq" and len(text) == 10:
            found |= _hashes(session, blind_index, "Patient", "birthdate", [text])
            continue
        first, last = _FIRST_YEAR, this_year
        if prefix in ("eq", "ap"):
            first, last = wanted.start.year - (1 if prefix == "ap" else 0), wanted.start.year
            last = (wanted.end - timedelta(microseconds=1)).year + (1 if prefix == "ap" else 0)
        elif prefix in ("gt", "ge", "sa"):
            first = wanted.start.year
        elif prefix in ("lt", "le", "eb"):
            last = (wanted.end - timedelta(microseconds=1)).year
        found |= _hashes(session, blind_index, "Patient", "birthyear",
                         [str(y) for y in range(first, last + 1)])
    return found


def _date_filter(values: Sequence[str], paths: Sequence[str]
                 ) -> Callable[[dict[str, Any]], bool]:
    wanted = [(prefix, parse_date(text)) for prefix, text in map(_split_prefix, values)]

    def accept(body: dict[str, Any]) -> bool:
        targets = []
        for path in paths:
            for value in _values_at(body, path):
                try:
                    targets.append(parse_date(str(value)))
                except ValueError:
                    continue
        return any(want.matches(prefix, target) for prefix, want in wanted
                   for target in targets)
    return accept


def _values_at(node: Any, path: str) -> list[Any]:
    values = [node]
    for step in path.split("."):
        nxt: list[Any] = []
        for value in values:
            item = value.get(step) if isinstance(value, dict) else None
            if isinstance(item, list):
                nxt.extend(item)
            elif item is not None:
                nxt.append(item)
        values = nxt
    return values


def load_found(session: Session, repository: ResourceRepository, resource_type: str,
          ids: Iterable[str], filters: Sequence[Callable[[dict[str, Any]], bool]]
          ) -> list[Found]:
    found: list[Found] = []
    wanted = sorted(set(ids))
    for start in range(0, len(wanted), 500):
        for row in session.scalars(sa.select(ResourceRow).where(
                ResourceRow.resource_type == resource_type,
                ResourceRow.id.in_(wanted[start:start + 500]),
                ResourceRow.deleted.is_(False))):
            body = repository.get(resource_type, row.id)
            if body is None or not all(accept(body) for accept in filters):
                continue
            found.append(Found(body, row.source_feed, row.source_org,
                               tuple(row.security_labels.split()), row.last_updated))
    return found


def _clients(session: Session, repository: ResourceRepository, sources: list[Found],
             request: SearchRequest, client_system: str, visible: Visible | None
             ) -> list[Found]:
    """The unified clients (golden Patients) the matching source records belong to: every
    member of those clients is read in a few batched queries, then assembled in memory,
    from the members the caller may see only. A client is found only through a match the
    caller may see (a search on a withheld record's name must not find its client)."""
    ids = [f.resource["id"] for f in sources]
    members: dict[str, set[str]] = {}
    matched_member = aliased(ClientMemberRow)
    for start in range(0, len(ids), 500):  # every member of the active clients found
        for uid, client_id in session.execute(
                sa.select(ClientMemberRow.unique_id, ClientMemberRow.client_id)
                .join(matched_member, matched_member.client_id == ClientMemberRow.client_id)
                .join(ClientRow, ClientRow.id == ClientMemberRow.client_id)
                .where(matched_member.unique_id.in_(ids[start:start + 500]),
                       ClientRow.status == "active")):
            members.setdefault(client_id, set()).add(uid)
    membership = Membership.of(session)
    for client_id, uids in members.items():
        membership.learn_members(client_id, uids)
    known = {f.resource["id"]: f for f in sources}
    missing = {uid for uids in members.values() for uid in uids} - set(known)
    known.update({f.resource["id"]: f for f in
                  load_found(session, repository, "Patient", missing, ())})
    shown = _visible_by_id(list(known.values()), visible)
    matched = set(ids) & set(shown)
    found: list[Found] = []
    for client_id in sorted(members):
        if not matched.intersection(members[client_id]):
            continue
        found.append(golden_found(client_id, [shown[uid] for uid in sorted(members[client_id])
                                              if uid in shown], client_system))
    return found


def unified_patient(session: Session, repository: ResourceRepository, client_id: str,
                    client_system: str = DEFAULT_CLIENT_SYSTEM, visible: Visible | None = None
                    ) -> Found | None:
    """One client's golden Patient, assembled from the source Patients the caller may see:
    None for an unknown client or one none of whose records the caller may see (so that it
    answers as a missing one does). A retired client gives its inactive replaced-by form."""
    client = session.get(ClientRow, client_id)
    if client is None:
        return None
    if client.status != "active":
        retired = golden_patient(session, repository, client_id, client_system)
        return None if retired is None else Found(retired, "unified-record", None, (),
                                                  datetime(1970, 1, 1, tzinfo=UTC))
    parts = list(_visible_by_id(client_sources(session, repository, client_id),
                                visible).values())
    return golden_found(client_id, parts, client_system) if parts else None


def client_sources(session: Session, repository: ResourceRepository, client_id: str
                   ) -> list[Found]:
    """The source Patients linked to one client, by id."""
    members = list(session.scalars(sa.select(ClientMemberRow.unique_id)
                                   .where(ClientMemberRow.client_id == client_id)))
    if (client := session.get(ClientRow, client_id)) is not None and client.status == "active":
        Membership.of(session).learn_members(client_id, members)
    return sorted(load_found(session, repository, "Patient", members, ()),
                  key=lambda f: str(f.resource.get("id")))


def golden_found(client_id: str, parts: Sequence[Found], client_system: str) -> Found:
    """The golden Patient of `parts` (a client's source Patients) with its search facts."""
    ordered = sorted(parts, key=lambda p: str(p.resource.get("id")))
    golden = assemble_golden(client_id, [
        SourcePatient(p.resource, p.source_org, p.last_updated.isoformat()) for p in ordered],
        client_system)
    labels = tuple(sorted({c.get("code", "") for c in
                           (golden.get("meta") or {}).get("security") or []}))
    newest = max((p.last_updated for p in ordered), default=datetime.now(UTC))
    return Found(golden, "unified-record", None, labels, newest)


def _visible_by_id(found: Sequence[Found], visible: Visible | None) -> dict[str, Found]:
    """id -> each Found the caller may see, with its body as the caller may see it."""
    if visible is None:
        return {f.resource["id"]: f for f in found}
    return {f.resource["id"]: replace(f, resource=body)
            for f, body in zip(found, visible(found), strict=True) if body is not None}


def _clinical(session: Session, repository: ResourceRepository, blind_index: BlindIndexer,
              request: SearchRequest) -> list[Found]:
    rtype = request.resource_type
    candidates: set[str] | None = None
    filters: list[Callable[[dict[str, Any]], bool]] = []

    def narrow(ids: set[str]) -> None:
        nonlocal candidates
        candidates = ids if candidates is None else candidates & ids

    for c in request.criteria:
        match c.name:
            case "_id":
                narrow(set(c.values))
            case "patient" | "subject":
                refs: list[str] = []
                for value in c.values:
                    pid = value.removeprefix("Patient/")
                    refs.append(f"Patient/{pid}")
                    refs += [f"Patient/{m}" for m in _members(session, [pid])]
                narrow(_hashes(session, blind_index, rtype, "patient", refs))
            case "date":
                filters.append(_date_filter(c.values, DATE_PATHS[rtype]))
            case "code":
                filters.append(_code_filter(c.values, CODE_PATHS[rtype]))
            case "status":
                filters.append(_status_filter(c.values, STATUS_PATHS[rtype]))
    ids = candidates if candidates is not None else _all_ids(session, rtype)
    return load_found(session, repository, rtype, ids, filters)


def _codings(body: dict[str, Any], path: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for concept in _values_at(body, path):
        if isinstance(concept, dict):
            out += [c for c in concept.get("coding") or [] if isinstance(c, dict)]
    return out


def _code_filter(values: Sequence[str], path: str) -> Callable[[dict[str, Any]], bool]:
    def accept(body: dict[str, Any]) -> bool:
        for coding in _codings(body, path):
            for value in values:
                system, bar, code = value.rpartition("|")
                if not bar:
                    if coding.get("code") == value:
                        return True
                elif (not code or coding.get("code") == code) and (
                        coding.get("system") == system if system else not coding.get("system")):
                    return True
        return False
    return accept


def _status_filter(values: Sequence[str], path: str) -> Callable[[dict[str, Any]], bool]:
    wanted = {v.rpartition("|")[2] for v in values}

    def accept(body: dict[str, Any]) -> bool:
        for value in _values_at(body, path):
            if isinstance(value, str) and value in wanted:
                return True
            if isinstance(value, dict) and any(c.get("code") in wanted
                                               for c in value.get("coding") or []):
                return True
        return False
    return accept


def sort_key(request: SearchRequest) -> Callable[[Found], tuple[Any, ...]]:
    """A total order: the requested keys (missing values last), then the id."""
    rtype = request.resource_type

    def value(found: Found, key: str) -> str:
        body = found.resource
        if key == "_id":
            return str(body.get("id", ""))
        if key == "_lastUpdated":
            return found.last_updated.isoformat()
        if key == "birthdate":
            return str(body.get("birthDate") or "")
        if key in ("family", "given"):
            names = body.get("name") or [{}]
            part = names[0].get(key) if key == "family" else (names[0].get("given") or [""])[0]
            return fold_name(str(part or ""))
        if key == "date":
            dates = [str(v) for p in DATE_PATHS[rtype] for v in _values_at(body, p)]
            return min(dates) if dates else ""
        return ""

    def key(found: Found) -> tuple[Any, ...]:
        parts: list[Any] = []
        for name, descending in request.sort:
            text = value(found, name)
            parts += [text == "", _inverted(text) if descending else text]
        parts.append(str(found.resource.get("id", "")))
        return tuple(parts)
    return key


def _inverted(text: str) -> str:
    """A string that sorts in the reverse order of `text` (kept JSON-able for page cursors)."""
    return "".join(chr(0x10FFFF - ord(ch)) for ch in text) + "\U0010ffff"


def included(session: Session, repository: ResourceRepository, blind_index: BlindIndexer,
             request: SearchRequest, page: Sequence[Found]) -> list[Found]:
    """What `_include` / `_revinclude` add to a page of matches (not yet consent-filtered)."""
    out: list[Found] = []
    seen = {(f.resource.get("resourceType"), f.resource.get("id")) for f in page}
    if request.includes:  # clinical -> the Patients they refer to
        ids: set[str] = set()
        for source_type, param in request.includes:
            path = SUBJECT_PATHS.get(source_type, "subject")
            if param == "patient" or path == param:
                for f in page:
                    for ref in _values_at(f.resource, f"{path}.reference"):
                        if isinstance(ref, str) and ref.startswith("Patient/"):
                            ids.add(ref.removeprefix("Patient/"))
        out += [f for f in load_found(session, repository, "Patient", ids, ())
                if ("Patient", f.resource["id"]) not in seen]
    for target_type, _param in request.revincludes:  # Patients -> what refers to them
        patients: set[str] = set()
        for f in page:
            pid = str(f.resource.get("id"))
            patients.add(pid)
            if request.view == "unified":
                patients |= _members(session, [pid])
        refs = [f"Patient/{p}" for p in sorted(patients)]
        ids = _hashes(session, blind_index, target_type, "patient", refs)
        out += [f for f in sorted(load_found(session, repository, target_type, ids, ()),
                                  key=lambda f: str(f.resource.get("id")))
                if (target_type, f.resource["id"]) not in seen]
    return out
