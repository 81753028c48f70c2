"""The consent policy: roles, purposes of use, organisations, sensitive categories, resource
classes and default rules, as data in ``consent/*.yaml`` (format: docs/governance.md).

Every ``*.yaml`` file of the folder is read in name order and merged: each may hold any of
the top-level sections ``roles``, ``purposes``, ``organisations``, ``categories``,
``resource_classes`` (maps keyed by code) and ``rules`` (a list). A code defined twice, or
anything the engine could misread, is a `PolicyError` naming the file and the entry or rule,
and the service refuses to start: a policy that loads is one the engine can apply.

The folder is ``UR_CONSENT_DIR``, by default the repository's ``consent/``. It is not shipped
inside the package on purpose: the policy belongs to the organisations running the service,
is reviewed by their information governance, and an installed service names its copy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from fhir.resources.R4B import get_fhir_model_class
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from unified_record.fhir.security_labels import SENSITIVE_CATEGORIES

__all__ = [
    "BREAK_GLASS",
    "DIRECT_CARE",
    "OBLIGATIONS",
    "Category",
    "Organisation",
    "Policy",
    "PolicyError",
    "Purpose",
    "ResourceClass",
    "Role",
    "Rule",
    "load_policy",
]

BREAK_GLASS = "BTG"
DIRECT_CARE = ("TREAT", "ETREAT", BREAK_GLASS)  # never subject to the National Data Opt-out
OBLIGATIONS = ("redact-notes", "mark-restricted", "demographics-only")
Obligation = Literal["redact-notes", "mark-restricted", "demographics-only"]
Effect = Literal["permit", "deny", "consent"]

_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_PURPOSE = re.compile(r"[A-Z][A-Z0-9]{1,19}")
_RULE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,79}")
_SECTIONS = ("roles", "purposes", "organisations", "categories", "resource_classes", "rules")


class PolicyError(Exception):
    """The policy is invalid; the message names the file and the entry or rule."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Role(_Model):
    description: str = Field(min_length=1)
    purposes: tuple[str, ...] = Field(min_length=1)  # purposes of use this role may assert


class Purpose(_Model):
    display: str = Field(min_length=1)
    # True for purposes beyond individual care (research, planning, operations): a National
    # Data Opt-out denies them. Never true for TREAT, ETREAT or BTG.
    opt_out_applies: bool = False
    # False where a person's objection (a deny Consent) must not stop the work: break-glass,
    # matching their records, governance and their own subject access request.
    objections_apply: bool = True


class Organisation(_Model):
    name: str = Field(min_length=1)
    kind: Literal["nhs", "council", "other"]


class Label(_Model):
    system: str = Field(min_length=1)
    code: str = Field(min_length=1)


class Category(_Model):
    description: str = Field(min_length=1)
    labels: tuple[Label, ...] = Field(min_length=1)  # meta.security codings that carry it


class ResourceClass(_Model):
    description: str = Field(min_length=1)
    types: tuple[str, ...] = Field(min_length=1)


def _as_tuple(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


class Rule(_Model):
    """role x resource class x purpose x category -> effect. A missing condition matches
    anything; a list matches any of its values."""

    id: str
    effect: Effect
    reason: str = Field(min_length=1)  # plain words, for governance officers
    role: tuple[str, ...] | None = Field(default=None, min_length=1)
    purpose: tuple[str, ...] | None = Field(default=None, min_length=1)
    resource_class: tuple[str, ...] | None = Field(default=None, min_length=1)
    category: tuple[str, ...] | None = Field(default=None, min_length=1)
    obligations: tuple[Obligation, ...] = ()

    _listy = field_validator("role", "purpose", "resource_class", "category",
                             mode="before")(_as_tuple)

    @field_validator("id")
    @classmethod
    def _id_form(cls, value: str) -> str:
        if not _RULE_ID.fullmatch(value):
            raise ValueError("rule ids are lower-case letters, digits and '-'")
        return value

    @property
    def specificity(self) -> tuple[bool, bool, bool, bool]:
        """Compared in order: a rule naming a category beats any that does not; then one
        naming a role; then a purpose; then a resource class."""
        return (self.category is not None, self.role is not None, self.purpose is not None,
                self.resource_class is not None)


@dataclass(frozen=True)
class Policy:
    roles: Mapping[str, Role]
    purposes: Mapping[str, Purpose]
    organisations: Mapping[str, Organisation]
    categories: Mapping[str, Category]
    resource_classes: Mapping[str, ResourceClass]
    rules: tuple[Rule, ...]
    rule_files: Mapping[str, str]  # rule id -> file name, for explanations

    def class_of(self, resource_type: str) -> str | None:
        return self._type_classes.get(resource_type)

    def may_use(self, role: str | None, purpose: str | None) -> bool:
        found = self.roles.get(role or "")
        return found is not None and purpose in found.purposes

    def categories_of(self, labels: Iterable[Mapping[str, Any]]) -> frozenset[str]:
        """The sensitive categories a resource's meta.security codings carry."""
        return frozenset(category for label in labels
                         if (category := self._label_categories.get(
                             (str(label.get("system", "")), str(label.get("code", ""))))))

    @cached_property
    def rule_memo(self) -> dict[tuple[str, str, str | None, str | None], Rule | None]:
        """The winning rule per (role, purpose, resource class, category), as the consent
        engine works it out (`consent.engine`): a policy never changes once loaded, so each
        is worked out once."""
        return {}

    @cached_property
    def _type_classes(self) -> dict[str, str]:
        return {t: name for name, cls in self.resource_classes.items() for t in cls.types}

    @cached_property
    def _label_categories(self) -> dict[tuple[str, str], str]:
        return {(label.system, label.code): name for name, category in self.categories.items()
                for label in category.labels}


def load_policy(folder: Path) -> Policy:
    """Read and check every ``*.yaml`` in `folder`; raise PolicyError on the first problem."""
    if not folder.is_dir():
        raise PolicyError(f"{folder}: no consent policy folder (set UR_CONSENT_DIR)")
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise PolicyError(f"{folder}: no policy files (*.yaml) in the consent policy folder")
    maps: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS if name != "rules"}
    where: dict[tuple[str, str], str] = {}
    rules: list[Rule] = []
    rule_files: dict[str, str] = {}
    models: dict[str, type[_Model]] = {"roles": Role, "purposes": Purpose,
                                       "organisations": Organisation, "categories": Category,
                                       "resource_classes": ResourceClass}
    for path in files:
        document = _read(path)
        for section, body in document.items():
            if section == "rules":
                for index, item in enumerate(_list(path, body)):
                    rule = _rule(path, index, item)
                    if rule.id in rule_files:
                        raise PolicyError(f"{path.name}: rule {rule.id!r}: id already used in "
                                          f"{rule_files[rule.id]}")
                    rules.append(rule)
                    rule_files[rule.id] = path.name
                continue
            for code, value in _mapping(path, section, body).items():
                label = f"{path.name}: {section} {code!r}"
                if (section, code) in where:
                    raise PolicyError(f"{label}: already defined in {where[section, code]}")
                try:
                    maps[section][code] = models[section].model_validate(value)
                except ValidationError as exc:
                    raise PolicyError(f"{label}: {_reason(exc)}") from None
                where[section, code] = path.name
    policy = Policy(roles=maps["roles"], purposes=maps["purposes"],
                    organisations=maps["organisations"], categories=maps["categories"],
                    resource_classes=maps["resource_classes"], rules=tuple(rules),
                    rule_files=rule_files)
    _check(policy, where)
    return policy


def _read(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise PolicyError(f"{path.name}: not valid YAML{line}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path.name}: cannot read ({exc})") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise PolicyError(f"{path.name}: expected a mapping of sections "
                          f"({', '.join(_SECTIONS)})")
    unknown = sorted(str(key) for key in document if key not in _SECTIONS)
    if unknown:
        raise PolicyError(f"{path.name}: unknown section {unknown[0]!r} (expected one of "
                          f"{', '.join(_SECTIONS)})")
    return document


def _mapping(path: Path, section: str, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise PolicyError(f"{path.name}: {section}: expected a mapping of code: entry")
    for code in body:
        if not isinstance(code, str) or not _CODE.fullmatch(code):
            raise PolicyError(f"{path.name}: {section} {code!r}: codes are letters, digits, "
                              "'_', '.', '-' (starting with a letter)")
    return body


def _list(path: Path, body: Any) -> list[Any]:
    if not isinstance(body, list):
        raise PolicyError(f"{path.name}: rules: expected a list of rules")
    return body


def _rule(path: Path, index: int, item: Any) -> Rule:
    name = (f"rule {item['id']!r}" if isinstance(item, dict) and isinstance(item.get("id"), str)
            else f"rule #{index + 1}")
    if not isinstance(item, dict):
        raise PolicyError(f"{path.name}: {name}: expected a mapping")
    try:
        return Rule.model_validate(item)
    except ValidationError as exc:
        raise PolicyError(f"{path.name}: {name}: {_reason(exc)}") from None


def _reason(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    loc = ".".join(str(part) for part in error["loc"])
    return f"{loc}: {error['msg']}" if loc else str(error["msg"])


def _check(policy: Policy, where: Mapping[tuple[str, str], str]) -> None:
    """Cross-references and the rules every policy must keep."""
    for code in policy.purposes:
        if not _PURPOSE.fullmatch(code):
            raise PolicyError(f"{where['purposes', code]}: purposes {code!r}: purposes are v3 "
                              "ActReason codes (upper-case letters and digits)")
    for code in DIRECT_CARE:
        if code not in policy.purposes:
            raise PolicyError(f"policy: purposes {code!r} must be defined (direct care)")
        if policy.purposes[code].opt_out_applies:
            raise PolicyError(f"{where['purposes', code]}: purposes {code!r}: the National Data "
                              "Opt-out never applies to direct care")
    for name, role in policy.roles.items():
        for purpose in role.purposes:
            if purpose not in policy.purposes:
                raise PolicyError(f"{where['roles', name]}: roles {name!r}: unknown purpose "
                                  f"{purpose!r}")
    for category, (system, code, _display) in SENSITIVE_CATEGORIES.items():
        if category not in policy.categories:
            raise PolicyError(f"policy: categories {category!r} must be defined (the ingest "
                              "labels resources with it)")
        if (system, code) not in {(lb.system, lb.code)
                                  for lb in policy.categories[category].labels}:
            raise PolicyError(f"{where['categories', category]}: categories {category!r}: must "
                              f"include the label {system}|{code} the ingest writes")
    seen_labels: dict[tuple[str, str], str] = {}
    for name, entry in policy.categories.items():
        for label in entry.labels:
            key = (label.system, label.code)
            if key in seen_labels:
                raise PolicyError(f"{where['categories', name]}: categories {name!r}: label "
                                  f"{label.system}|{label.code} already carries "
                                  f"{seen_labels[key]!r}")
            seen_labels[key] = name
    seen_types: dict[str, str] = {}
    for name, resource_class in policy.resource_classes.items():
        for resource_type in resource_class.types:
            here = f"{where['resource_classes', name]}: resource_classes {name!r}"
            if resource_type in seen_types:
                raise PolicyError(f"{here}: {resource_type} is already in class "
                                  f"{seen_types[resource_type]!r}")
            try:
                get_fhir_model_class(resource_type)
            except (KeyError, ValueError):
                raise PolicyError(f"{here}: {resource_type!r} is not a FHIR resource type"
                                  ) from None
            seen_types[resource_type] = name
    for rule in policy.rules:
        _check_rule(policy, rule)


def _check_rule(policy: Policy, rule: Rule) -> None:
    label = f"{policy.rule_files[rule.id]}: rule {rule.id!r}"
    for field_name, known in (("role", policy.roles), ("purpose", policy.purposes),
                              ("resource_class", policy.resource_classes),
                              ("category", policy.categories)):
        for value in getattr(rule, field_name) or ():
            if value not in known:
                raise PolicyError(f"{label}: unknown {field_name.replace('_', ' ')} {value!r}")
    if rule.effect == "deny" and rule.obligations:
        raise PolicyError(f"{label}: a deny rule has no obligations")
    if rule.role is not None and rule.purpose is not None and not any(
            policy.may_use(role, purpose) for role in rule.role for purpose in rule.purpose):
        raise PolicyError(f"{label}: can never apply: none of its roles may use any of its "
                          "purposes")
