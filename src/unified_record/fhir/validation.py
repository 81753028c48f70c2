"""FHIR R4 validation with fhir.resources (R4B models), remembering the shapes that passed.

Validating a body with fhir.resources walks every element through Python-level validators:
about half of what ingest spends preparing a message. But whether a body is valid depends on
two separate things: its shape (which elements are present, nested how, lists how long, each
leaf's Python type, and which resource types appear) and, for every primitive value in it,
whether that value is valid for its FHIR type (a date, a code, an id...). fhir.resources'
model-level checks (unknown elements, required elements, one-of-many choice elements, nulls
in lists, the resource type) look only at the shape, and each primitive is checked on its
own, with nothing else as context.

Feeds mapped from declarative files produce few shapes (a 2,000-person dataset: 13,468
resources, 94 shapes). So the first body of a shape is validated in full by fhir.resources;
if it passes, the shape is remembered with, for each primitive leaf in walk order, the
pydantic validator of its fhir.resources field type. A later body with the same shape has
only its primitives checked, each by fhir.resources' own type for that field (values that
passed before are remembered too). Anything not understood while remembering a shape (an
element given as a JSON string, a polymorphic element without its resourceType) leaves
the shape unremembered: its bodies are always validated in full. When a leaf fails, the
body is validated in full as well, so the caller gets fhir.resources' own error.
`tests/test_fhir_validation.py` checks, with random mutations of valid resources, that this
gives fhir.resources' verdict every time.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir_core.constraints import FHIR_TYPES_MAPS
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase, FhirElementOrResourceBase
from pydantic import TypeAdapter, ValidationError
from pydantic._internal._validators import import_string

# Bounds on what is remembered, as API callers send bodies too: shapes of at most
# _MAX_SHAPE_TOKENS tokens, _MAX_SHAPES of them; values of at most _MAX_VALUE_LENGTH
# characters, _MAX_VALUES of them (each set starts again when full)
_MAX_SHAPES = 20_000
_MAX_SHAPE_TOKENS = 4_000
_MAX_VALUES = 300_000
_MAX_VALUE_LENGTH = 200
_DICT, _LIST, _END = object(), object(), object()  # shape tokens; keys and types go between
_UNKNOWN = object()

# shape -> the validator of each primitive leaf, in walk order; None: validate in full
_shapes: dict[tuple[Any, ...], tuple[TypeAdapter[Any], ...] | None] = {}
# (validator, type, value) of primitive values that passed their validator
_valid_values: set[tuple[TypeAdapter[Any], type, Any]] = set()
_adapters: dict[Any, TypeAdapter[Any]] = {}
_fields: dict[type, dict[str, Any]] = {}


class InvalidResource(ValueError):
    """The resource is not valid FHIR R4; the message gives paths, never values."""


def validation_reason(exc: ValidationError, prefix: str = "") -> str:
    """Where validation failed, without the offending value (it may be personal data)."""
    errors = exc.errors(include_input=False, include_url=False)
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{prefix}{loc}: {first['msg']}{more}"


def validate_resource(resource: dict[str, Any]) -> None:
    """Raise InvalidResource unless `resource` is a valid FHIR R4 resource."""
    shape: list[Any] = []
    leaves: list[Any] = []
    try:
        _walk(resource, shape, leaves)
        key: tuple[Any, ...] | None = tuple(shape)  # hashable: tokens, keys, types, names
        validators = _shapes.get(key, _UNKNOWN)  # type: ignore[arg-type]
    except RecursionError:  # nested too deep to walk: the model alone decides
        key, validators = None, None
    if type(validators) is tuple and _leaves_valid(validators, leaves):
        return
    model = _model_class(resource)
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        raise InvalidResource(validation_reason(exc, f"{model.get_resource_type()} invalid: ")
                              ) from None
    except (TypeError, KeyError, AttributeError) as exc:
        # fhir_core crashes on some malformed bodies (a contained resource whose
        # resourceType is not a known type name); the type of error says where, not what
        raise InvalidResource(f"{model.get_resource_type()} invalid: malformed element "
                              f"({type(exc).__name__} in fhir.resources)") from None
    if key is not None and validators is _UNKNOWN and len(key) <= _MAX_SHAPE_TOKENS:
        _remember(key, model, resource, len(leaves))


def _model_class(resource: dict[str, Any]) -> type[FHIRAbstractModel]:
    rtype = str(resource.get("resourceType", ""))
    try:
        return get_fhir_model_class(rtype)
    except (KeyError, ValueError):
        raise InvalidResource(f"unknown FHIR resource type {rtype!r}") from None


def _walk(value: Any, shape: list[Any], leaves: list[Any]) -> None:
    """Append `value`'s shape tokens to `shape` and its non-null primitives to `leaves`. The
    resource type is part of the shape: it chooses the model of a contained resource.
    Leaves are handled inline (most values are leaves): only objects and arrays recurse."""
    kind = type(value)
    if kind is dict:
        shape.append(_DICT)
        for key, item in value.items():
            shape.append(key)
            item_kind = type(item)
            if item_kind is dict or item_kind is list:
                _walk(item, shape, leaves)
            elif key == "resourceType" and item_kind is str:
                shape.append(item)
            else:
                shape.append(item_kind)
                if item is not None:
                    leaves.append(item)
        shape.append(_END)
    elif kind is list:
        shape.append(_LIST)
        for item in value:
            item_kind = type(item)
            if item_kind is dict or item_kind is list:
                _walk(item, shape, leaves)
            else:
                shape.append(item_kind)
                if item is not None:
                    leaves.append(item)
        shape.append(_END)
    else:
        shape.append(kind)
        if value is not None:
            leaves.append(value)


def _leaves_valid(validators: tuple[TypeAdapter[Any], ...], leaves: list[Any]) -> bool:
    for validator, value in zip(validators, leaves, strict=True):
        remembered: tuple[TypeAdapter[Any], type, Any] | None = (validator, type(value), value)
        try:
            if remembered in _valid_values:
                continue
        except TypeError:  # an unhashable value (a set from a Python caller): never kept
            remembered = None
        try:
            validator.validate_python(value)
        except ValidationError:
            return False
        if remembered is None or (type(value) is str and len(value) > _MAX_VALUE_LENGTH):
            continue
        if len(_valid_values) >= _MAX_VALUES:
            _valid_values.clear()
        _valid_values.add(remembered)
    return True


def _remember(key: tuple[Any, ...], model: type[FHIRAbstractModel], resource: dict[str, Any],
              leaf_count: int) -> None:
    """Remember a shape that just passed, with each leaf's validator; None when a leaf's
    field cannot be told from the models (its bodies are then always validated in full)."""
    validators: list[TypeAdapter[Any]] = []
    understood = _derive(model, resource, validators) and len(validators) == leaf_count
    if len(_shapes) >= _MAX_SHAPES:
        _shapes.clear()
    _shapes[key] = tuple(validators) if understood else None


def _derive(model: type, body: dict[str, Any], out: list[TypeAdapter[Any]]) -> bool:
    fields = _fields.get(model)
    if fields is None:
        fields = {}
        for name, info in model.model_fields.items():  # type: ignore[attr-defined]
            fields[name] = fields[info.alias or name] = info.annotation
        _fields[model] = fields
    for key, value in body.items():
        if key == "resourceType" and type(value) is str:
            continue
        annotation = fields.get(key)
        if annotation is None or not _derive_value(annotation, value, out):
            return False
    return True


def _derive_value(annotation: Any, value: Any, out: list[TypeAdapter[Any]]) -> bool:
    if value is None:
        return True
    if type(value) is dict:
        model = _complex_model(annotation, value)
        return model is not None and _derive(model, value, out)
    if type(value) is list:
        item = _list_item(annotation)
        return item is not None and all(_derive_value(item, v, out) for v in value)
    if _is_complex(annotation):  # a complex element given as a string: fhir.resources parses it
        return False
    adapter = _adapters.get(annotation)
    if adapter is None:
        adapter = _adapters[annotation] = TypeAdapter(annotation)
    out.append(adapter)
    return True


def _without_none(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _without_none(args[0])
    return annotation


def _list_item(annotation: Any) -> Any:
    annotation = _without_none(annotation)
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    for option in typing.get_args(annotation) if union else (annotation,):
        if typing.get_origin(option) is list:
            return typing.get_args(option)[0]
    return None


def _is_complex(annotation: Any) -> bool:
    annotation = _without_none(annotation)
    return isinstance(annotation, type) and issubclass(annotation, FhirBase)


def _complex_model(annotation: Any, value: dict[str, Any]) -> type | None:
    """The model fhir.resources validates `value` with, chosen as fhir_core chooses it."""
    if not _is_complex(annotation):
        return None
    annotation = _without_none(annotation)
    if issubclass(annotation, FhirElementOrResourceBase):
        rtype = value.get("resourceType")
        if type(rtype) is not str:
            return None
        try:
            return import_string(  # type: ignore[no-any-return]
                FHIR_TYPES_MAPS[annotation._prefix + rtype + "Type"])
        except (KeyError, ImportError):
            return None
    return annotation.get_model_klass()  # type: ignore[no-any-return]
