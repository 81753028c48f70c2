"""FHIR transaction and batch Bundles from NHS systems.

Every entry's resource is validated with fhir.resources (R4B). Each resource gets a logical
id of ours derived from (feed, type, sender's id), and references inside the Bundle (to a
`fullUrl` or to `Type/id`) are rewritten to match, as a FHIR server does for a transaction.
A transaction is all or nothing; in a batch each entry stands alone and a bad entry is
reported while the rest are kept.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource

from unified_record.fhir.validation import InvalidResource, validate_resource
from unified_record.ingest.mapping import (
    FeedMapping,
    MappedRecord,
    MappedResource,
    RecordError,
    evaluate_on,
    resource_id,
)
from unified_record.store.resources import parse_json

MAX_DEPTH = 100  # nesting of objects and arrays; real Bundles stay far below it
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}\Z")
_CONTAINERS = (dict, list)
_HTTP_VERBS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})


class ResourceRecord:
    """A FHIR resource (or a Bundle's resources) as a mapping SourceRecord.

    Paths are `Type.element.element`; lists are searched, and the first value found is returned.
    """

    def __init__(self, resources: list[dict[str, Any]]) -> None:
        self.resources = resources

    def get(self, path: str) -> str | None:
        type_name, _, rest = path.partition(".")
        for resource in self.resources:
            if resource.get("resourceType") != type_name:
                continue
            for value in _walk(resource, rest.split(".") if rest else []):
                if value not in (None, ""):
                    return str(value)
        return None

    def all(self, path: str) -> list[str]:
        type_name, _, rest = path.partition(".")
        return [str(v) for r in self.resources if r.get("resourceType") == type_name
                for v in _walk(r, rest.split(".") if rest else []) if v not in (None, "")]


class _OneValue:
    """A record where one path reads as one chosen value (the others as in `record`)."""

    def __init__(self, record: ResourceRecord, path: str, value: str) -> None:
        self.record, self.path, self.value = record, path, value

    def get(self, path: str) -> str | None:
        return self.value if path == self.path else self.record.get(path)


def _labels(mapping: FeedMapping, resource: dict[str, Any]) -> list[str]:
    """The categories of the label rules that hold for this resource. A rule holds if it
    holds for any value at its path, not only the first: a sensitive code in a resource's
    second coding must label it as surely as in its first. Rules usually share a path (one
    per category, all on the condition's codes): its values are read once."""
    record = ResourceRecord([resource])
    values_at: dict[str, list[str]] = {}
    categories = []
    for rule in mapping.labels:
        when = rule.when
        path = when.get("$") if isinstance(when, dict) else None
        if not isinstance(path, str):
            holds = bool(evaluate_on(mapping, when, record))
        else:
            if path not in values_at:
                values_at[path] = record.all(path)
            holds = any(evaluate_on(mapping, when, _OneValue(record, path, value))
                        for value in values_at[path])
        if holds:
            categories.append(rule.category)
    return categories


def _walk(node: Any, steps: list[str]) -> list[Any]:
    if isinstance(node, list):
        return [v for item in node for v in _walk(item, steps)]
    if not steps:
        return [node]
    if not isinstance(node, dict):
        return []
    return _walk(node.get(steps[0]), steps[1:])


def entry_key(entry: dict[str, Any]) -> str:
    """What identifies an entry's resource at its sender: its id, else its fullUrl, else (a
    POST with neither) a digest of its content, so a resent Bundle maps to the same ids."""
    resource = entry["resource"]
    if resource.get("id"):
        return str(resource["id"])
    if entry.get("fullUrl"):
        return str(entry["fullUrl"])
    canonical = json.dumps(resource, sort_keys=True, separators=(",", ":")).encode()
    return "content:" + hashlib.sha256(canonical).hexdigest()


def map_bundle(mapping: FeedMapping, raw: bytes, sender_org: str | None = None
               ) -> MappedRecord:
    """Validate and map one Bundle; raise RecordError with a readable reason.

    `sender_org`: the authenticated sender's organisation (the FHIR API's caller), which is
    then the source organisation whatever the Bundle says."""
    try:
        data = parse_json(raw)
    except RecursionError:
        raise RecordError(f"JSON nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # also UnicodeDecodeError and integers too long to convert
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(
            exc, json.JSONDecodeError) else ""
        raise RecordError(f"not valid JSON{where}") from None
    if _too_deep(data):
        raise RecordError(f"JSON nested more than {MAX_DEPTH} levels deep")
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise RecordError("not a FHIR Bundle (resourceType must be 'Bundle')")
    if data.get("type") not in ("transaction", "batch"):
        raise RecordError("Bundle.type must be 'transaction' or 'batch'")
    transaction = data["type"] == "transaction"
    if not isinstance(data.get("entry", []), list):
        raise RecordError("Bundle.entry must be a list")
    warnings: list[str] = []
    entries: list[tuple[int, dict[str, Any]]] = []
    for position, entry in enumerate(data.get("entry") or []):
        problem = _entry_problem(entry)
        if problem is None:
            entries.append((position, entry))
        elif transaction:  # all or nothing
            raise RecordError(f"entry {position}: {problem}")
        else:
            warnings.append(f"entry {position} left out: {problem}")
    resources = [e["resource"] for _, e in entries if isinstance(e.get("resource"), dict)]
    whole = ResourceRecord(resources)
    source_org = sender_org or evaluate_on(mapping, mapping.source_org, whole)
    if not source_org:
        raise RecordError("source organisation not found in the Bundle")
    record_key = evaluate_on(mapping, mapping.record_key, whole) if mapping.record_key else None
    result = MappedRecord(str(source_org), str(record_key) if record_key else None,
                          warnings=warnings)

    new_refs: dict[str, str] = {}
    ids: dict[int, tuple[str, str]] = {}  # position -> (the sender's key, our id)
    for position, entry in entries:
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        rtype, sender_id = str(resource["resourceType"]), str(resource.get("id") or "")
        key = entry_key(entry)
        ids[position] = key, resource_id(mapping.feed, rtype, key)
        ours = f"{rtype}/{ids[position][1]}"
        if entry.get("fullUrl"):
            new_refs[str(entry["fullUrl"])] = ours
        if sender_id:
            new_refs[f"{rtype}/{sender_id}"] = ours

    # A null can only be in the text as the token `null`: without it there is none to check.
    maybe_nulls = not json.detect_encoding(raw).startswith("utf-8") or b"null" in raw
    for position, entry in entries:
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        method = (entry.get("request") or {}).get("method", "PUT")
        if method not in ("PUT", "POST"):
            # The method is echoed only when it is one: a corrupt entry may hold anything.
            what = method if isinstance(method, str) and method in _HTTP_VERBS else (
                "request.method")
            result.warnings.append(f"entry {position}: {what} is not accepted from this feed")
            continue
        # Labels are read from the resource as sent; then it becomes ours in place (the
        # parsed Bundle is this call's own, and nothing reads the entry after this).
        labels = _labels(mapping, resource)
        key, body_id = ids[position]
        body = _rewrite_references(resource, new_refs)
        rtype = str(body["resourceType"])
        body["id"] = body_id
        try:
            if maybe_nulls:
                _check_nulls(body, rtype)
            validate_resource(body)  # the only validation of FHIR-feed resources
        except InvalidResource as exc:
            if transaction:  # all or nothing
                raise RecordError(f"entry {position}: {exc}") from None
            result.warnings.append(f"entry {position} left out: {exc}")
            continue
        result.resources.append(MappedResource(body, key, labels))
    if not result.resources:
        raise RecordError("Bundle has no resources this feed accepts")
    return result


def _entry_problem(entry: Any) -> str | None:
    """Why an entry cannot be read at all (None when it can); never quotes its content."""
    if not isinstance(entry, dict):
        return "not a JSON object"
    if not isinstance(entry.get("request") or {}, dict):
        return "request must be a JSON object"
    resource = entry.get("resource")
    if isinstance(resource, dict) and not _is_resource_type(resource.get("resourceType")):
        # Not echoed: a corrupt entry can carry a name or date where the type should be.
        return "resourceType missing or not a FHIR resource type"
    return None


def _is_resource_type(name: Any) -> bool:
    if not isinstance(name, str) or not _TYPE_NAME.match(name):
        return False
    if name in ("Resource", "DomainResource"):  # abstract
        return False
    try:
        return issubclass(get_fhir_model_class(name), Resource)
    except ValueError:  # not a FHIR model at all
        return False


def _check_nulls(resource: dict[str, Any], rtype: str) -> None:
    """FHIR JSON allows null only in a primitive array whose `_name` twin holds an extension
    at that position (fhir.resources lets stray nulls through); raise InvalidResource,
    naming where (the path is built only then: nearly every resource has none)."""
    if _has_stray_null(resource):
        _raise_stray_null(resource, rtype)


def _stray_null(node: dict[str, Any], key: str, value: list[Any]) -> int | None:
    """The position of the first null in `node[key]` without an extension in `_key`."""
    if key.startswith("_") or None not in value:
        return None
    twin = node.get(f"_{key}")
    for i, item in enumerate(value):
        if item is None and not (isinstance(twin, list) and len(twin) == len(value)
                                 and twin[i] is not None):
            return i
    return None


def _has_stray_null(resource: dict[str, Any]) -> bool:
    stack: list[Any] = [resource]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, list):
                    if _stray_null(node, key, value) is not None:
                        return True
                    stack.append(value)
                elif isinstance(value, dict):
                    stack.append(value)
    return False


def _raise_stray_null(resource: dict[str, Any], rtype: str) -> None:
    stack: list[tuple[Any, str]] = [(resource, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, list):
            stack.extend((item, f"{path}.{i}") for i, item in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            where = f"{path}.{key}" if path else key
            if isinstance(value, list) and (i := _stray_null(node, key, value)) is not None:
                raise InvalidResource(f"{rtype} invalid: {where}.{i}: null without "
                                      f"an extension in _{key}")
            stack.append((value, where))


def _too_deep(data: Any) -> bool:
    """True when objects and arrays nest deeper than MAX_DEPTH (walked level by level,
    without recursion, holding only the objects and arrays of one level at a time)."""
    level = [data] if type(data) in _CONTAINERS else []
    depth = 1
    while level:
        if depth > MAX_DEPTH:
            return True
        below = []
        for node in level:
            for child in node.values() if type(node) is dict else node:
                if type(child) in _CONTAINERS:  # exact types: this is parsed JSON
                    below.append(child)
        level = below
        depth += 1
    return False


def _rewrite_references(node: Any, new_refs: dict[str, str]) -> Any:
    """Rewrite every `reference` in place; only objects and arrays are descended into (the
    exact types, as this is parsed JSON), as most values are leaves."""
    if type(node) is dict:
        for key, value in node.items():
            kind = type(value)
            if kind is str:
                if key == "reference" and value in new_refs:
                    node[key] = new_refs[value]
            elif kind in _CONTAINERS:
                _rewrite_references(value, new_refs)
    elif type(node) is list:
        for item in node:
            if type(item) in _CONTAINERS:
                _rewrite_references(item, new_refs)
    return node
