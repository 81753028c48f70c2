"""FHIR R4 validation with fhir.resources (R4B models), remembering recent valid bodies.

Feeds repeat themselves: a council export repeats the client's details on every event row
and every ADT message carries the whole PID. Validation is deterministic, so a body that
validated once need not be validated again; the cache holds digests, not bodies.
"""

from __future__ import annotations

import hashlib
import pickle
from collections import OrderedDict
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

_CACHE_SIZE = 100_000
_valid: OrderedDict[bytes, None] = OrderedDict()


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
    digest = _digest(resource)
    if digest is not None and digest in _valid:
        _valid.move_to_end(digest)
        return
    rtype = str(resource.get("resourceType", ""))
    try:
        model = get_fhir_model_class(rtype)
    except (KeyError, ValueError):
        raise InvalidResource(f"unknown FHIR resource type {rtype!r}") from None
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        raise InvalidResource(validation_reason(exc, f"{rtype} invalid: ")) from None
    if digest is not None:
        _valid[digest] = None
        if len(_valid) > _CACHE_SIZE:
            _valid.popitem(last=False)


def _digest(resource: dict[str, Any]) -> bytes | None:
    """The cache key of a body: a hash of its pickle, which is exact about values and their
    types (unlike JSON, where a date and its ISO string, or a tuple and a list, look the
    same) and in key order (an equal body built in another order is only a miss). Half the
    time of `json.dumps` with sorted keys. None when it cannot be pickled: never cached."""
    try:
        return hashlib.blake2b(pickle.dumps(resource, protocol=5), digest_size=16).digest()
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError):
        return None
