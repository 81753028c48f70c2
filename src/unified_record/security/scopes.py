"""SMART on FHIR scopes (v2 ``system/Patient.rs``, v1 ``user/*.read``): parse, grant, enforce.

A scope names a context (``patient``, ``user``, ``system``), a resource type or ``*``, and
permissions from ``cruds`` (create, read, update, delete, search). The v1 suffixes are
the same permissions under older names: ``.read`` = ``rs``, ``.write`` = ``cud``,
``.*`` = ``cruds``.

Deny by default: a granular v2 scope with a query (``patient/Observation.rs?category=x``)
grants nothing yet, since nothing here can check the query; a scope that does not parse
grants nothing. A transaction or batch is checked entry by entry, each entry with its own
interaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "CONTEXTS",
    "Interaction",
    "Scope",
    "ScopeSet",
    "grant_scopes",
    "parse_scope",
]

CONTEXTS = ("patient", "user", "system")
_ORDER = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE_RE = re.compile(
    r"(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]{1,63})"
    r"\.(?P<perms>read|write|\*|c?r?u?d?s?)(?P<query>\?\S*)?"
)


class Interaction(StrEnum):
    """FHIR RESTful interactions (CapabilityStatement codes) that scopes govern."""

    READ = "read"
    VREAD = "vread"
    HISTORY_INSTANCE = "history-instance"
    HISTORY_TYPE = "history-type"
    HISTORY_SYSTEM = "history-system"
    SEARCH_TYPE = "search-type"
    SEARCH_SYSTEM = "search-system"
    CREATE = "create"
    UPDATE = "update"
    PATCH = "patch"
    DELETE = "delete"


# The permission each interaction needs (SMART App Launch 2.0, "scopes for requesting
# FHIR resources"): instance reads are `r`, type- and system-level listing is `s`.
_NEEDS = {
    Interaction.READ: "r",
    Interaction.VREAD: "r",
    Interaction.HISTORY_INSTANCE: "r",
    Interaction.HISTORY_TYPE: "s",
    Interaction.HISTORY_SYSTEM: "s",
    Interaction.SEARCH_TYPE: "s",
    Interaction.SEARCH_SYSTEM: "s",
    Interaction.CREATE: "c",
    Interaction.UPDATE: "u",
    Interaction.PATCH: "u",
    Interaction.DELETE: "d",
}


@dataclass(frozen=True, slots=True)
class Scope:
    """One resource scope. `text` is how it was written (kept when granted in full)."""

    context: str
    resource_type: str  # a FHIR resource type, or "*" for every type
    permissions: frozenset[str]
    query: str = ""  # v2 granular constraint, "" when none
    text: str = ""

    def __str__(self) -> str:
        return self.text or self.canonical()

    def canonical(self) -> str:
        """The v2 spelling, permissions in ``cruds`` order."""
        perms = "".join(p for p in _ORDER if p in self.permissions)
        return f"{self.context}/{self.resource_type}.{perms}{self.query}"

    def covers(self, resource_type: str, permission: str) -> bool:
        return (
            not self.query
            and permission in self.permissions
            and self.resource_type in ("*", resource_type)
        )


def parse_scope(text: str) -> Scope:
    """Parse one SMART resource scope; ValueError names what is wrong with it."""
    match = _SCOPE_RE.fullmatch(text)
    if match is None or not match["perms"]:
        raise ValueError(
            f"not a SMART resource scope: {text[:80]!r} "
            "(expected e.g. system/Patient.rs, user/*.read)"
        )
    perms = match["perms"]
    if match["query"] and perms in _V1:
        raise ValueError(f"a v1 scope cannot carry a query: {text[:80]!r}")
    return Scope(
        context=match["context"],
        resource_type=match["type"],
        permissions=frozenset(_V1.get(perms, perms)),
        query=match["query"] or "",
        text=text,
    )


@dataclass(frozen=True, slots=True)
class ScopeSet:
    """The resource scopes of a token; other scope values (``openid``...) are kept aside."""

    scopes: tuple[Scope, ...] = ()
    other: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | Iterable[str]) -> ScopeSet:
        """From a space-separated string or a list (as some identity providers send)."""
        values = text.split() if isinstance(text, str) else list(text)
        scopes: list[Scope] = []
        other: list[str] = []
        for value in values:
            try:
                scopes.append(parse_scope(value))
            except ValueError:
                other.append(value)
        return cls(tuple(scopes), tuple(other))

    def __iter__(self) -> Iterator[Scope]:
        return iter(self.scopes)

    def __str__(self) -> str:
        return " ".join([*(str(s) for s in self.scopes), *self.other])

    def contexts_permitting(self, resource_type: str,
                            interaction: Interaction) -> frozenset[str]:
        """The contexts (``system``, ``user``, ``patient``) whose scopes allow this.

        The enforcement point needs the context, not just yes or no: access granted only by
        ``patient/`` scopes is limited to the patient in the token's launch context.
        """
        permission = _NEEDS[interaction]
        return frozenset(s.context for s in self.scopes if s.covers(resource_type, permission))

    def permits(self, resource_type: str, interaction: Interaction) -> bool:
        return bool(self.contexts_permitting(resource_type, interaction))


def grant_scopes(requested: str | None, registered: str) -> list[str]:
    """What a client gets: the requested scopes narrowed to what it was registered for.

    Each requested resource scope is intersected with the registered ones of the same
    context (type ``*`` narrows to the other side's type; permissions intersect). A scope
    granted in full keeps the client's spelling (v1 stays v1); a narrowed one is written
    in v2. Nothing requested means everything registered. Non-resource values are
    granted only if registered verbatim.
    """
    allowed = ScopeSet.parse(registered)
    if requested is None or not requested.strip():
        return str(allowed).split()
    granted: dict[str, None] = {}  # an ordered set
    for value in requested.split():
        try:
            want = parse_scope(value)
        except ValueError:
            if value in allowed.other:
                granted[value] = None
            continue
        for scope in _intersect(want, allowed.scopes):
            granted[str(scope)] = None
    return list(granted)


def _intersect(want: Scope, allowed: Iterable[Scope]) -> Iterator[Scope]:
    merged: dict[str, set[str]] = {}
    for have in allowed:
        if have.context != want.context or (have.query and have.query != want.query):
            continue
        if want.resource_type == "*":
            resource_type = have.resource_type
        elif have.resource_type in ("*", want.resource_type):
            resource_type = want.resource_type
        else:
            continue
        common = want.permissions & have.permissions
        if common:
            merged.setdefault(resource_type, set()).update(common)
    for resource_type, perms in merged.items():
        whole = resource_type == want.resource_type and perms == want.permissions
        yield Scope(want.context, resource_type, frozenset(perms), want.query,
                    want.text if whole else "")
