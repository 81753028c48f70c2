"""Test data for the consent tests (importable by name, unlike conftest)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from unified_record.consent.breakglass import BreakGlassGrant
from unified_record.consent.policy import Policy, load_policy
from unified_record.consent.records import ConsentDirective, build_consent, parse_consent
from unified_record.security.caller import Caller
from unified_record.security.scopes import ScopeSet

REPO_ROOT = Path(__file__).resolve().parents[2]
CONSENT_DIR = REPO_ROOT / "consent"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CLIENT = "C0123456789ab"
C1, C2, C_OLD = "C000000000001", "C000000000002", "C0000000000aa"  # the `world` fixture
ISSUER = "https://issuer.example"
KEY_1 = bytes(range(32))  # the `keyring` fixture's data key
_policy: Policy | None = None


@dataclass
class Clock:
    """A clock tests move by hand."""

    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


def policy() -> Policy:
    """The repository's policy, loaded once."""
    global _policy
    if _policy is None:
        _policy = load_policy(CONSENT_DIR)
    return _policy


def caller(role: str | None, org: str | None = "RZ1", sub: str = "user-1",
           client_id: str = "app-1") -> Caller:
    return Caller(client_id=client_id, sub=sub, organisation=org, role=role,
                  scopes=ScopeSet.parse("system/*.rs"), issuer=ISSUER)


def consent(effect: str = "deny", status: str = "active", consent_id: str = "k1",
            **conditions: Any) -> ConsentDirective:
    body = build_consent(policy(), client_id=CLIENT, effect=effect,  # type: ignore[arg-type]
                         now=NOW, **conditions)
    body.update(id=consent_id, status=status)
    return parse_consent(body, policy())


def grant(who: Caller, client_id: str = CLIENT, minutes: int = 60,
          started: datetime = NOW - timedelta(minutes=5)) -> BreakGlassGrant:
    return BreakGlassGrant("g1", client_id, who.client_id, who.sub, who.organisation,
                           who.role, started, started + timedelta(minutes=minutes))


def policy_copy(tmp_path: Path, **replacements: str) -> Path:
    """A copy of the repository's policy folder with some files replaced (name -> text)."""
    folder = tmp_path / "consent"
    shutil.copytree(CONSENT_DIR, folder, ignore=shutil.ignore_patterns("*.md"))
    for name, text in replacements.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder
