"""Standardised linkage features, one row per stored source Patient.

Each feed writes names, addresses and phone numbers its own way (upper-case HL7 names,
"SURNAME, Given" splits, spaced NHS numbers); Splink compares strings, so every Patient is
reduced here to the same folded, comparable columns. The rows are plaintext personal data:
they are meant for an in-memory (or temporary-file) DuckDB only and are never logged.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Iterable, Iterator
from functools import lru_cache
from typing import Any, Protocol

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]  # no stubs; a dependency of Splink
import sqlalchemy as sa
from sqlalchemy.orm import Session

from unified_record.fhir.nhs_number import is_valid_nhs_number, normalise_nhs_number
from unified_record.fhir.uk_core import EXT_NHS_NUMBER_VERIFICATION, NHS_NUMBER_SYSTEM
from unified_record.ingest.search_values import email_key, fold_name, phone_key, soundex
from unified_record.ingest.transforms import FieldError
from unified_record.ingest.transforms import postcode as normalise_postcode
from unified_record.store.models import ResourceRow
from unified_record.store.resources import ResourceRepository


class PatientStore(Protocol):
    """What feature extraction reads: a session and the resource repository on it (a
    `UnitOfWork`, or any caller-owned session with its repository)."""

    session: Session
    resources: ResourceRepository

__all__ = ["FEATURE_COLUMNS", "iter_patient_features", "load_features", "patient_features"]

# Column name -> DuckDB type; everything not noted is VARCHAR.
_COLUMN_TYPES: dict[str, str] = {
    "unique_id": "VARCHAR",
    "source_dataset": "VARCHAR",
    "source_record_id": "VARCHAR",
    "source_org": "VARCHAR",
    "active": "BOOLEAN",
    "replaced_by": "VARCHAR",
    "nhs_number": "VARCHAR",
    "nhs_verified": "BOOLEAN",
    "first_name": "VARCHAR",
    "middle_names": "VARCHAR",
    "surname": "VARCHAR",
    "first_name_soundex": "VARCHAR",
    "surname_soundex": "VARCHAR",
    "dob": "VARCHAR",
    "dob_year": "INTEGER",
    "sex": "VARCHAR",
    "postcode": "VARCHAR",
    "postcode_sector": "VARCHAR",
    "postcode_district": "VARCHAR",
    "house_number": "VARCHAR",
    "address_line1": "VARCHAR",
    "phone": "VARCHAR",
    "email": "VARCHAR",
    "last_updated": "VARCHAR",
}
FEATURE_COLUMNS: tuple[str, ...] = tuple(_COLUMN_TYPES)

_ARROW_TYPES = {"VARCHAR": pa.string(), "BOOLEAN": pa.bool_(), "INTEGER": pa.int32()}
_ARROW_SCHEMA = pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in _COLUMN_TYPES.items()])

# Letters that Unicode decomposition does not reduce to ASCII (fold_name handles Ł itself).
_TRANSLITERATE = str.maketrans({
    "Ø": "O", "ø": "o", "Æ": "AE", "æ": "ae", "Œ": "OE", "œ": "oe", "ß": "ss", "Đ": "D",
    "đ": "d", "Ð": "D", "ð": "d", "Þ": "TH", "þ": "th", "ı": "i", "Ł": "L", "ł": "l",
})
_APOSTROPHES = re.compile(r"['’`]")
_NOT_WORD = re.compile(r"[^a-z0-9]+")
_HOUSE_NUMBER = re.compile(r"^(\d+[a-z]?)(?:\s*-\s*\d+[a-z]?)?(?![a-z0-9])[\s,]*(.*)$", re.S)
_FULL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)
_YEAR = re.compile(r"^(\d{4})", re.ASCII)
_PATIENT_REF = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_NAME_USES = ("official", "usual")  # preferred Patient.name, in order; else the first
_SEXES = frozenset({"male", "female", "other", "unknown"})
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_LOAD_CHUNK = 50_000
# Names, postcodes and their keys repeat across a population (a million records hold some
# 10,000 surnames and 60,000 postcodes), so their normalisation is memoised: a bounded
# cache of pure functions of one string.
_CACHE_SIZE = 1 << 16


def patient_features(
    resource: dict[str, Any],
    *,
    source_feed: str,
    source_org: str | None,
    source_record_id: str | None,
) -> dict[str, object]:
    """One feature row (keys in FEATURE_COLUMNS order) for a FHIR Patient body."""
    nhs_number, nhs_verified = _nhs_number(resource.get("identifier"))
    first_name, middle_names, surname = _name_parts(_chosen(resource.get("name"), _NAME_USES))
    birth = _text(resource.get("birthDate"))
    gender = resource.get("gender")
    address = _address(resource.get("address"))
    postcode, sector, district = _postcode_parts(address)
    house_number, address_line1 = _address_line(address)
    meta = resource.get("meta")
    return {
        "unique_id": _text(resource.get("id")),
        "source_dataset": source_feed,
        "source_record_id": source_record_id or None,
        "source_org": source_org or None,
        "active": resource.get("active") is not False,
        "replaced_by": _replaced_by(resource.get("link")),
        "nhs_number": nhs_number,
        "nhs_verified": nhs_verified,
        "first_name": first_name,
        "middle_names": middle_names,
        "surname": surname,
        "first_name_soundex": _soundex(first_name) if first_name else None,
        "surname_soundex": _soundex(surname) if surname else None,
        "dob": birth if birth and _FULL_DATE.match(birth) else None,
        "dob_year": int(match.group(1)) if birth and (match := _YEAR.match(birth)) else None,
        "sex": gender if gender in _SEXES else None,
        "postcode": postcode,
        "postcode_sector": sector,
        "postcode_district": district,
        "house_number": house_number,
        "address_line1": address_line1,
        "phone": phone_key(_telecom(resource.get("telecom"), "phone")),
        "email": email_key(_telecom(resource.get("telecom"), "email")),
        "last_updated": _text(meta.get("lastUpdated")) if isinstance(meta, dict) else None,
    }


def iter_patient_features(
    uow: PatientStore, *, batch_size: int = 2000, exclude_feeds: Collection[str] = ()
) -> Iterator[dict[str, object]]:
    """Feature rows for every current (not deleted) Patient in the store, in id order.

    Rows are read in keyset-paginated batches, so only one batch of bodies is held at a
    time. `exclude_feeds` leaves out Patients that are not source records (for example the
    unified client index's own golden Patients, once it stores them under a feed name).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    after: str | None = None
    while True:
        stmt = sa.select(ResourceRow).where(
            ResourceRow.resource_type == "Patient", ResourceRow.deleted.is_(False)
        )
        if exclude_feeds:
            stmt = stmt.where(ResourceRow.source_feed.not_in(list(exclude_feeds)))
        if after is not None:
            stmt = stmt.where(ResourceRow.id > after)
        rows = list(uow.session.scalars(stmt.order_by(ResourceRow.id).limit(batch_size)))
        for row in rows:
            # The row is in the session's identity map, so this decrypts without a query.
            body = uow.resources.get("Patient", row.id)
            if body is None:
                continue
            yield patient_features(
                body,
                source_feed=row.source_feed,
                source_org=row.source_org,
                source_record_id=row.source_record_id,
            )
        if len(rows) < batch_size:
            return
        after = rows[-1].id


def load_features(
    con: duckdb.DuckDBPyConnection, rows: Iterable[dict[str, object]], table: str = "features"
) -> int:
    """Create (or replace) `table` in DuckDB and fill it with feature rows; return the count.

    Rows go in as Arrow chunks, so a large population loads without one INSERT per row.
    `con` must be an in-memory or temporary DuckDB database: these are plaintext identifiers.
    """
    if not _TABLE_NAME.match(table):
        raise ValueError("table must be a plain SQL identifier")
    columns = ", ".join(f"{name} {kind}" for name, kind in _COLUMN_TYPES.items())
    con.execute(f"CREATE OR REPLACE TABLE {table} ({columns})")
    count = 0
    chunk: dict[str, list[object]] = {name: [] for name in FEATURE_COLUMNS}
    for row in rows:
        for name in FEATURE_COLUMNS:
            chunk[name].append(row.get(name))
        count += 1
        if count % _LOAD_CHUNK == 0:
            _insert_chunk(con, table, chunk)
            chunk = {name: [] for name in FEATURE_COLUMNS}
    if chunk[FEATURE_COLUMNS[0]]:
        _insert_chunk(con, table, chunk)
    return count


def _insert_chunk(
    con: duckdb.DuckDBPyConnection, table: str, chunk: dict[str, list[object]]
) -> None:
    arrow = pa.Table.from_pydict(chunk, schema=_ARROW_SCHEMA)
    view = "_ur_feature_chunk"
    con.register(view, arrow)
    try:
        con.execute(f"INSERT INTO {table} SELECT {', '.join(FEATURE_COLUMNS)} FROM {view}")
    finally:
        con.unregister(view)


# -- names ---------------------------------------------------------------------------------


@lru_cache(maxsize=_CACHE_SIZE)
def _fold_name(text: str) -> str:
    """Lower-case ASCII letters only: "O'Brien-Smyth" -> "obriensmyth", "Zoë" -> "zoe"."""
    return fold_name(text.translate(_TRANSLITERATE)).lower()


@lru_cache(maxsize=_CACHE_SIZE)
def _soundex(folded: str) -> str | None:
    return soundex(folded) or None


def _name_parts(name: dict[str, Any] | None) -> tuple[str | None, str | None, str | None]:
    """(first, middle names, surname); every given name is split on spaces, then folded."""
    if name is None:
        return None, None, None
    given = [
        folded
        for entry in name.get("given") or []
        if isinstance(entry, str)
        for word in entry.split()
        if (folded := _fold_name(word))
    ]
    family = name.get("family")
    surname = _fold_name(family) if isinstance(family, str) else ""
    return (given[0] if given else None), " ".join(given[1:]) or None, surname or None


def _chosen(entries: object, uses: tuple[str, ...]) -> dict[str, Any] | None:
    """The first entry with the most preferred `use`, else the first entry."""
    candidates = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    for use in uses:
        for entry in candidates:
            if entry.get("use") == use:
                return entry
    return candidates[0] if candidates else None


# -- identifiers, links, dates ---------------------------------------------------------------


def _nhs_number(identifiers: object) -> tuple[str | None, bool]:
    """The first NHS number that passes modulus 11, and whether its status is "01"."""
    for ident in identifiers if isinstance(identifiers, list) else []:
        if not isinstance(ident, dict) or ident.get("system") != NHS_NUMBER_SYSTEM:
            continue
        value = ident.get("value")
        if not isinstance(value, str):
            continue
        number = normalise_nhs_number(value)
        if not is_valid_nhs_number(number):
            continue
        verified = any(
            coding.get("code") == "01"
            for ext in ident.get("extension") or []
            if ext.get("url") == EXT_NHS_NUMBER_VERIFICATION
            for coding in (ext.get("valueCodeableConcept") or {}).get("coding") or []
        )
        return number, verified
    return None, False


def _replaced_by(links: object) -> str | None:
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("type") == "replaced-by":
            reference = (link.get("other") or {}).get("reference")
            if isinstance(reference, str) and (match := _PATIENT_REF.search(reference)):
                return match.group(1)
    return None


def _text(value: object) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


# -- address and contact ---------------------------------------------------------------------


def _is_current(entry: dict[str, Any]) -> bool:
    return entry.get("use") != "old" and not (entry.get("period") or {}).get("end")


def _address(addresses: object) -> dict[str, Any] | None:
    """The current home address, else the first current one, else the first."""
    entries = [a for a in addresses if isinstance(a, dict)] if isinstance(addresses, list) else []
    current = [a for a in entries if _is_current(a)]
    return _chosen(current, ("home",)) or _chosen(entries, ("home",))


def _postcode_parts(address: dict[str, Any] | None) -> tuple[str | None, str | None, str | None]:
    """("LS61AA", "LS6 1", "LS6") for a valid UK postcode, else all None."""
    raw = _text(address.get("postalCode")) if address else None
    return (None, None, None) if raw is None else _postcode_split(raw)


@lru_cache(maxsize=_CACHE_SIZE)
def _postcode_split(raw: str) -> tuple[str | None, str | None, str | None]:
    try:
        spaced = normalise_postcode(raw, None)
    except FieldError:
        return None, None, None
    outward, inward = spaced.split(" ")
    return outward + inward, f"{outward} {inward[0]}", outward


def _ascii_lower(text: str) -> str:
    """Diacritics removed, lower case: "Zoë Ørsted" -> "zoe orsted"."""
    if text.isascii():  # nothing to remove (the usual case)
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRANSLITERATE))
    return decomposed.encode("ascii", "ignore").decode("ascii").lower()


def _fold_text(text: str) -> str:
    """Lower-case ASCII words separated by single spaces: "St. Mary's" -> "st marys"."""
    return _NOT_WORD.sub(" ", _APOSTROPHES.sub("", _ascii_lower(text))).strip()


def _address_line(address: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(house number, rest of the first line folded): "12a Roundhay Ave" -> ("12a", ...)."""
    lines = address.get("line") if address else None
    first = next((ln for ln in lines or [] if isinstance(ln, str) and ln.strip()), None)
    if first is None:
        return None, None
    text = _ascii_lower(first).strip()
    match = _HOUSE_NUMBER.match(text)
    if match is None:
        return None, _fold_text(text) or None
    return match.group(1), _fold_text(match.group(2)) or None


def _telecom(telecoms: object, system: str) -> str | None:
    """The first current contact point of a system (phone, email) that has a value."""
    entries = [
        t for t in (telecoms if isinstance(telecoms, list) else [])
        if isinstance(t, dict) and t.get("system") == system and _text(t.get("value"))
    ]
    chosen = next((t for t in entries if _is_current(t)), entries[0] if entries else None)
    return _text(chosen.get("value")) if chosen else None

