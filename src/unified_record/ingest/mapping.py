"""The mapping engine: declarative feed mappings (`mappings/*.yaml`) turned into FHIR.

A mapping file names its feed, format and source organisation, the source person record key,
code lists (`maps`), and one template per resource. A template is the FHIR resource's JSON
shape in YAML where any value may be an *expression*:

    {$: "Field", transform: [trim, {date: "%d/%m/%Y"}], on_error: drop}
    {$template: "{Field A}-{Field B}"}
    {$ref: Patient}                      # Reference to this record's Patient
    {$const: value}

A dict or list whose expressions all produced nothing is dropped, so an empty NHS number
removes its whole identifier. `$when` on a dict keeps it only when its expression is truthy.
Each resource's logical id is a UUID derived from (feed, type, key): stable across re-sends,
and it never exposes the source system's ids. See docs/mappings.md.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from unified_record.fhir.security_labels import SENSITIVE_CATEGORIES
from unified_record.ingest.transforms import (
    NEEDS_ARGUMENT,
    TRANSFORMS,
    FieldError,
    argument_problem,
)

ID_NAMESPACE = uuid.UUID("5b1f4f0e-7a4b-4c59-9d27-6c1a0e5f3a10")
_ID_NAMESPACE_BYTES = ID_NAMESPACE.bytes
MAPPINGS_DIR = Path(__file__).resolve().parents[3] / "mappings"
_TEMPLATE_FIELD = re.compile(r"\{([^{}]+)\}")
EXPRESSION_KEYS = {"$", "$template", "$ref", "$const"}


class MappingFileError(Exception):
    """A mapping file is invalid: the message names the file and the place in it."""


class RecordError(Exception):
    """A source record cannot be mapped; `reason` names the field, never its value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SourceRecord(Protocol):
    """What the engine reads: a CSV row, an HL7 message, ... by field name or path."""

    def get(self, path: str) -> str | None: ...


class DictRecord:
    """A CSV row (or any flat record) as a SourceRecord; blank cells are absent."""

    __slots__ = ("row",)

    def __init__(self, row: dict[str, str]) -> None:
        self.row = row

    def get(self, path: str) -> str | None:
        value = self.row.get(path)
        if value is None or not value.strip():
            return None
        return value


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LabelRule(_Spec):
    category: str
    when: Any


class ResourceSpec(_Spec):
    type: str = Field(alias="resource")
    key: Any
    when: Any = None
    labels: list[LabelRule] = Field(default_factory=list)
    template: dict[str, Any]


class CsvOptions(_Spec):
    delimiter: str = ","
    encoding: str = "utf-8-sig"
    required_columns: list[str] = Field(default_factory=list)


class MergeSpec(_Spec):
    when: Any
    retired: Any  # the record key that is merged away (e.g. MRG-1)


class FeedMapping(_Spec):
    feed: str
    format: Literal["csv", "hl7v2", "fhir"]
    description: str = ""
    source_org: Any
    record_key: Any = None
    csv: CsvOptions = Field(default_factory=CsvOptions)
    maps: dict[str, dict[str, Any]] = Field(default_factory=dict)
    resources: list[ResourceSpec] = Field(default_factory=list)
    labels: list[LabelRule] = Field(default_factory=list)  # fhir format: per-resource rules
    merge: MergeSpec | None = None
    # Each template node and expression compiled once, on first use (see `_compiled`).
    _compiled: dict[tuple[int, bool], tuple[Any, Any]] = PrivateAttr(default_factory=dict)


@dataclass
class MappedResource:
    resource: dict[str, Any]
    source_record_id: str
    labels: list[str]


@dataclass
class MappedRecord:
    source_org: str
    source_record_id: str | None
    resources: list[MappedResource] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    retired_record_id: str | None = None  # set by a merge (HL7 A40)


def resource_id(feed: str, resource_type: str, key: str) -> str:
    """`str(uuid.uuid5(ID_NAMESPACE, "feed|type|key"))`, computed without the UUID object
    (a third of the time; every resource needs one or two)."""
    digest = bytearray(hashlib.sha1(_ID_NAMESPACE_BYTES + f"{feed}|{resource_type}|{key}"
                                    .encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# --- loading ----------------------------------------------------------------------------------


def load_mapping(path: Path) -> FeedMapping:
    """Read and check a mapping file; every problem names the file and where in it."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingFileError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise MappingFileError(f"{path}{where}: not valid YAML") from None
    try:
        mapping = FeedMapping.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "mapping"
        raise MappingFileError(f"{path}: {loc}: {err['msg']}") from None
    _check_expressions(mapping, path)
    return mapping


def load_mappings(folder: Path = MAPPINGS_DIR) -> dict[str, FeedMapping]:
    mappings = {}
    for path in sorted(folder.glob("*.yaml")):
        mapping = load_mapping(path)
        if mapping.feed in mappings:
            raise MappingFileError(f"{path}: feed {mapping.feed!r} is mapped twice")
        mappings[mapping.feed] = mapping
    return mappings


def _check_expressions(mapping: FeedMapping, path: Path) -> None:
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if EXPRESSION_KEYS & node.keys():
                _check_expression(node, where)
                return
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}[{i}]")

    def _check_expression(node: dict[str, Any], where: str) -> None:
        allowed = EXPRESSION_KEYS | {"transform", "on_error"}
        unknown = set(node) - allowed
        if unknown:
            raise MappingFileError(f"{path}: {where}: unknown expression key(s) {sorted(unknown)}")
        if node.get("on_error", "reject") not in ("reject", "drop"):
            raise MappingFileError(f"{path}: {where}: on_error must be 'reject' or 'drop'")
        for step in _steps(node.get("transform")):
            name, arg = step
            if name == "map":
                if arg not in mapping.maps:
                    raise MappingFileError(f"{path}: {where}: no code list {arg!r} in maps")
            elif name not in TRANSFORMS:
                raise MappingFileError(f"{path}: {where}: unknown transform {name!r}")
            if name in NEEDS_ARGUMENT and arg is None:
                raise MappingFileError(f"{path}: {where}: transform {name!r} needs an argument")
            problem = argument_problem(name, arg)
            if problem:
                raise MappingFileError(f"{path}: {where}: transform {name!r}: {problem}")
        ref = node.get("$ref")
        if ref is not None and ref not in {r.type for r in mapping.resources}:
            raise MappingFileError(f"{path}: {where}: $ref to {ref!r}, which this feed never makes")
        if mapping.format == "hl7v2":  # a bad path would fail every message: fail here instead
            from unified_record.ingest.hl7_record import is_path

            fields = [node["$"]] if "$" in node else []
            fields += _TEMPLATE_FIELD.findall(str(node.get("$template", "")))
            for field_path in fields:
                if not isinstance(field_path, str) or not is_path(field_path):
                    raise MappingFileError(f"{path}: {where}: {field_path!r} is not an HL7 path "
                                           "(like PID-5.1, PID-3[2].1 or PID-3[5=MR].1)")

    for i, spec in enumerate(mapping.resources):
        here = f"resources[{i}]"
        walk(spec.template, f"{here}.template")
        walk(spec.key, f"{here}.key")
        if spec.when is not None:
            walk(spec.when, f"{here}.when")
        for j, rule in enumerate(spec.labels):
            if rule.category not in SENSITIVE_CATEGORIES:
                raise MappingFileError(f"{path}: {here}.labels[{j}]: unknown category "
                                       f"{rule.category!r}")
            walk(rule.when, f"{here}.labels[{j}].when")
    for j, rule in enumerate(mapping.labels):
        if rule.category not in SENSITIVE_CATEGORIES:
            raise MappingFileError(f"{path}: labels[{j}]: unknown category {rule.category!r}")
        walk(rule.when, f"labels[{j}].when")
    walk(mapping.source_org, "source_org")
    if mapping.record_key is not None:
        walk(mapping.record_key, "record_key")
    if mapping.merge is not None:
        walk(mapping.merge.when, "merge.when")
        walk(mapping.merge.retired, "merge.retired")


def _steps(transform: Any) -> list[tuple[str, Any]]:
    if transform is None:
        return []
    items = transform if isinstance(transform, list) else [transform]
    steps = []
    for item in items:
        if isinstance(item, str):
            steps.append((item, None))
        elif isinstance(item, dict) and len(item) == 1:
            name, arg = next(iter(item.items()))
            steps.append((str(name), arg))
        else:
            steps.append((repr(item), None))
    return steps


# --- rendering --------------------------------------------------------------------------------


class _Context:
    def __init__(self, mapping: FeedMapping, record: SourceRecord, ids: dict[str, str]) -> None:
        self.mapping = mapping
        self.record = record
        self.ids = ids
        self.warnings: list[str] = []
        # pydantic's private-attribute lookup (`mapping._compiled`) takes some 3 µs; its
        # dict is read directly, as this runs for every record and every label rule
        self.compiled = mapping.__pydantic_private__["_compiled"]  # type: ignore[index]


def evaluate(node: Any, ctx: _Context) -> Any:
    """Evaluate an expression (or return a literal)."""
    evaluator: Callable[[_Context], Any] = _compiled(ctx, node, template=False)
    return evaluator(ctx)


def render(node: Any, ctx: _Context) -> tuple[Any, bool]:
    """Render a template node: (value, whether any expression inside produced something)."""
    renderer: Callable[[_Context], tuple[Any, bool]] = _compiled(ctx, node, template=True)
    return renderer(ctx)


def _compiled(ctx: _Context, node: Any, *, template: bool) -> Any:
    """`node` of the context's mapping compiled into a function of the context, once per node.

    Rendering walked every template as data for every record: which keys are expressions,
    which subtrees contain one, the transform steps. Compiled, the record's values are all
    that is left to look at. The cache holds the node itself, so its id cannot be reused."""
    cache = ctx.compiled
    entry = cache.get((id(node), template))
    if entry is None or entry[0] is not node:
        entry = (node, _compile_template(node) if template else _compile_expression(node))
        cache[(id(node), template)] = entry
    return entry[1]


def _compile_expression(node: Any) -> Callable[[_Context], Any]:
    if not isinstance(node, dict) or not (EXPRESSION_KEYS & node.keys()):
        return lambda _ctx: node
    if "$const" in node:
        const = node["$const"]
        return lambda _ctx: const
    if "$ref" in node:
        ref = node["$ref"]

        def reference(ctx: _Context) -> Any:
            target = ctx.ids.get(ref)
            return {"reference": f"{ref}/{target}"} if target else None

        return reference
    read: Callable[[_Context], Any]
    if "$template" in node:
        parts = _TEMPLATE_FIELD.split(node["$template"])  # literal, field, literal, ...
        literals, fields = parts[0::2], parts[1::2]

        def read(ctx: _Context) -> Any:
            values = [ctx.record.get(name) for name in fields]
            if any(value is None for value in values):
                return None
            out = [literals[0]]
            for value, literal in zip(values, literals[1:], strict=True):
                out += (value.strip(), literal)  # type: ignore[union-attr]
            return "".join(out)
    else:
        path = node["$"]

        def read(ctx: _Context) -> Any:
            return ctx.record.get(path)

    steps = _steps(node.get("transform"))
    if not steps:
        return read
    where = node.get("$") or node.get("$template")
    drop = node.get("on_error", "reject") == "drop"

    def transformed(ctx: _Context) -> Any:
        value = read(ctx)
        for name, arg in steps:
            try:
                if name == "map":
                    value = _lookup(ctx.mapping.maps[arg], value, arg)
                else:
                    value = TRANSFORMS[name](value, arg)
            except FieldError as exc:
                message = f"field {where!r}: {exc.reason}"
                if drop:
                    ctx.warnings.append(f"{message}; value left out")
                    return None
                raise RecordError(message) from None
        return value

    return transformed


def _lookup(table: dict[str, Any], value: Any, name: str) -> Any:
    if value is None:
        return None
    key = value.strip() if isinstance(value, str) else value
    if key in table:
        return table[key]
    if "_default" in table:
        return table["_default"]
    raise FieldError(f"code not in code list {name!r}")


# What rendering leaves out, as constants: a literal `[]` or `{}` in a test is a new object
# at every evaluation, and these tests run for every template node of every record.
_NOTHING: tuple[Any, ...] = (None, "", [])
_NOTHING_OR_EMPTY: tuple[Any, ...] = (None, "", [], {})
_NOTHING_OR_NO_OBJECT: tuple[Any, ...] = (None, "", {})


def _compile_template(node: Any) -> Callable[[_Context], tuple[Any, bool]]:
    """As `render` would walk `node`: an expression's value (dropped when empty); a dict
    kept when `$when` holds and, if it contains expressions, one of them produced
    something; a list of the rendered items, expressions' lists spread into it."""
    if isinstance(node, dict):
        if EXPRESSION_KEYS & node.keys():
            expr = _compile_expression(node)

            def expression(ctx: _Context) -> tuple[Any, bool]:
                value = expr(ctx)
                return (value, True) if value not in _NOTHING else (None, False)

            return expression
        when = _compile_expression(node["$when"]) if "$when" in node else None
        children = [(key, _compile_template(child)) for key, child in node.items()
                    if key != "$when"]
        has_expression = any(_contains_expression(child) for key, child in node.items()
                             if key != "$when")

        def mapping_node(ctx: _Context) -> tuple[Any, bool]:
            if when is not None and not when(ctx):
                return None, False
            out: dict[str, Any] = {}
            produced = False
            for key, child in children:
                value, child_produced = child(ctx)
                produced = produced or child_produced
                if value not in _NOTHING_OR_EMPTY:
                    out[key] = value
            if has_expression and not produced:
                return None, False
            return (out or None), produced

        return mapping_node
    if isinstance(node, list):
        items = [(_compile_template(child),
                  _contains_expression(child) and not isinstance(child, list))
                 for child in node]

        def list_node(ctx: _Context) -> tuple[Any, bool]:
            out: list[Any] = []
            produced = False
            for child, spread in items:
                value, child_produced = child(ctx)
                produced = produced or child_produced
                if value in _NOTHING_OR_NO_OBJECT:
                    continue
                if isinstance(value, list) and spread:
                    out.extend(v for v in value if v not in (None, ""))
                else:
                    out.append(value)
            return (out or None), produced

        return list_node
    return lambda _ctx: (node, False)


def _contains_expression(node: Any) -> bool:
    if isinstance(node, dict):
        if EXPRESSION_KEYS & node.keys():
            return True
        return any(_contains_expression(v) for v in node.values())
    if isinstance(node, list):
        return any(_contains_expression(v) for v in node)
    return False


def evaluate_on(mapping: FeedMapping, node: Any, record: SourceRecord) -> Any:
    """Evaluate one expression of a mapping against a record (for adapters)."""
    return evaluate(node, _Context(mapping, record, {}))


def map_record(mapping: FeedMapping, record: SourceRecord) -> MappedRecord:
    """Map one source record to FHIR resources (not yet validated or stored)."""
    ctx = _Context(mapping, record, {})
    source_org = evaluate(mapping.source_org, ctx)
    if not source_org:
        raise RecordError("source organisation missing")
    record_key = evaluate(mapping.record_key, ctx) if mapping.record_key is not None else None
    if mapping.record_key is not None and not record_key:
        where = mapping.record_key.get("$") if isinstance(mapping.record_key, dict) else None
        raise RecordError(f"source record key missing (field {where!r})" if where
                          else "source record key missing")
    result = MappedRecord(str(source_org), str(record_key) if record_key else None)
    chosen: list[tuple[ResourceSpec, str, str]] = []
    for spec in mapping.resources:
        if spec.when is not None and not evaluate(spec.when, ctx):
            continue
        key = evaluate(spec.key, ctx)
        if not key:
            continue
        rid = resource_id(mapping.feed, spec.type, str(key))
        ctx.ids.setdefault(spec.type, rid)
        chosen.append((spec, str(key), rid))
    for spec, key, rid in chosen:
        body, _ = render(spec.template, ctx)
        body = dict(body or {})
        body["resourceType"] = spec.type
        body["id"] = rid
        labels = [rule.category for rule in spec.labels if evaluate(rule.when, ctx)]
        result.resources.append(MappedResource(body, key, labels))
    if mapping.merge is not None and evaluate(mapping.merge.when, ctx):
        retired = evaluate(mapping.merge.retired, ctx)
        if not retired:
            raise RecordError("merge message without the record to merge")
        result.retired_record_id = str(retired)
    result.warnings = list(dict.fromkeys(ctx.warnings))  # one warning per problem
    return result
