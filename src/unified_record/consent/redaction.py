"""Obligations a permit carries, applied to the resource before it leaves the service.

* ``redact-notes``: free text goes (``text``: the narrative and CodeableConcept texts,
  ``note``, ``comment``, at any depth; codings stay); the resource is labelled REDACTED.
* ``mark-restricted``: the resource is labelled confidentiality R (restricted), so the
  receiving system treats it as sensitive.
* ``demographics-only``: only the elements needed to tell who the person is stay (the data a
  steward needs to decide a match); the resource is tagged SUBSETTED.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["apply_obligations"]

CS_OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
CS_CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
_FREE_TEXT = frozenset({"text", "note", "comment"})
_DEMOGRAPHICS = frozenset({
    "resourceType", "id", "meta", "identifier", "active", "name", "gender", "birthDate",
    "deceasedBoolean", "deceasedDateTime", "address", "telecom", "link", "patient",
    "relationship"})


def apply_obligations(body: Mapping[str, Any], obligations: Iterable[str]) -> dict[str, Any]:
    """A redacted copy of `body`, which is never changed. The copy has its own top level,
    its own `meta` and its own lists in `meta` (labels are only ever added to those, here
    and in the API's provenance) and shares everything else with `body`, the codings in
    those lists included (a deep copy of every permitted resource was a tenth of a search's
    time): change those only in a copy."""
    out = dict(body)
    if isinstance(meta := out.get("meta"), dict):
        out["meta"] = {key: list(value) if isinstance(value, list) else value
                       for key, value in meta.items()}
    wanted = set(obligations)
    if "demographics-only" in wanted:
        out = {key: value for key, value in out.items() if key in _DEMOGRAPHICS}
        _label(out, "tag", {"system": CS_OBSERVATION_VALUE, "code": "SUBSETTED",
                            "display": "subsetted"})
    if "redact-notes" in wanted:
        out = _strip_text(out)
        _label(out, "security", {"system": CS_OBSERVATION_VALUE, "code": "REDACTED",
                                 "display": "redacted"})
    if "mark-restricted" in wanted:
        _label(out, "security", {"system": CS_CONFIDENTIALITY, "code": "R",
                                 "display": "restricted"})
    return out


def _strip_text(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_text(v) for k, v in value.items() if k not in _FREE_TEXT}
    if isinstance(value, list):
        return [_strip_text(item) for item in value]
    return value


def _label(body: dict[str, Any], element: str, coding: dict[str, str]) -> None:
    meta = body.setdefault("meta", {})
    codings = meta.setdefault(element, [])
    if not any(c.get("system") == coding["system"] and c.get("code") == coding["code"]
               for c in codings):
        codings.append(coding)
