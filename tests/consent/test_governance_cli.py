"""The governance commands as an information-governance officer runs them: consent,
optout, breakglass, policy check, and audit verify / checkpoint / trail / denied."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from cli_support import run
from consent_support import CONSENT_DIR, caller, policy_copy

from unified_record.config import load_settings
from unified_record.consent import AccessContext, EnforcementPoint
from unified_record.security import load_or_create_keys
from unified_record.store import ResourceRepository, make_engine, make_session_factory, migrate
from unified_record.store.models import ClientRow

CLIENT = "C00000000cli1"


def _seed(database_url: str) -> None:
    migrate(database_url)
    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        session.add(ClientRow(id=CLIENT, status="active", replaced_by=None, created_run=1,
                              updated_run=1))
        session.commit()
    engine.dispose()


def _break_glass(reason: str) -> str:
    """A social worker breaks the glass through the enforcement point (as the API would)."""
    settings = load_settings()
    engine = make_engine(settings.database_url)
    keyring, blind_index = load_or_create_keys(settings)
    point = EnforcementPoint.from_settings(settings, engine, keyring)
    with make_session_factory(engine)() as session:
        grant = point.request_break_glass(
            session, AccessContext(caller("social_worker"), "BTG", "192.0.2.9"), CLIENT, reason)
        session.commit()
        repo = ResourceRepository(session, keyring, blind_index)
        point.authorize_read(session, repo, AccessContext(caller("partner_system"), "TREAT"),
                             "Condition", "none")
    engine.dispose()
    return grant.id


def test_an_officer_records_and_reviews(env: Path, database_url: str) -> None:
    _seed(database_url)
    code, out = run("consent", "add", CLIENT, "--deny", "--from-org", "RZ2",
                    "--category", "mental_health", "--by", "officer-1")
    assert code == 0 and "note:" not in out, out
    consent_id = re.search(r"Consent/(\S+)", out).group(1)  # type: ignore[union-attr]
    code, out = run("consent", "add", CLIENT, "--permit", "--purpose", "HRESCH",
                    "--start", "2026-01-01", "--by", "officer-1")
    assert code == 0, out
    code, out = run("consent", "add", CLIENT, "--deny", "--to-org", "RZ9", "--end",
                    "2020-01-01", "--by", "officer-1")
    assert code == 0 and "note: organisation RZ9 is not in the policy's organisations" in out
    code, out = run("consent", "list", CLIENT)
    assert code == 0, out
    assert f"{consent_id}  1  active  deny" in out
    assert "from RZ2; category mental_health" in out
    assert "permit" in out and "purpose HRESCH; period 2026-01-01.." in out
    code, out = run("consent", "withdraw", consent_id, "--by", "officer-1")
    assert (code, out.strip()) == (0, f"Consent/{consent_id} is now inactive (version 2)")
    assert f"{consent_id}  2  inactive" in run("consent", "list", CLIENT)[1]

    assert run("optout", "set", CLIENT, "--by", "officer-1")[1].startswith(
        "National Data Opt-out set")
    assert "already set" in run("optout", "set", CLIENT, "--by", "officer-1")[1]
    assert run("optout", "clear", CLIENT, "--by", "officer-1")[0] == 0

    grant_id = _break_glass("patient collapsed at home visit")
    code, out = run("breakglass", "list")
    assert code == 0 and grant_id in out and "awaiting review" in out
    assert "reason: patient collapsed at home visit" in out
    code, out = run("breakglass", "close", grant_id, "--outcome", "appropriate",
                    "--by", "officer-2", "--note", "matches the visit log")
    assert code == 0, out
    assert run("breakglass", "list")[1].strip() == "no break-glass grants awaiting review"
    assert "closed appropriate by officer-2" in run("breakglass", "list", "--all")[1]
    code, out = run("breakglass", "close", grant_id, "--outcome", "appropriate", "--by", "x")
    assert code == 2 and "already closed" in out

    code, out = run("audit", "trail", CLIENT)
    assert code == 0, out
    events = [line.split("  ")[2] for line in out.splitlines()]
    assert events == ["consent-recorded", "consent-recorded", "consent-recorded",
                      "consent-withdrawn",
                      "opt-out-set", "opt-out-cleared", "break-glass-granted",
                      "break-glass-reviewed"]
    assert "BREAK-GLASS" in out.splitlines()[-1]
    rows = list(csv.DictReader(io.StringIO(run("audit", "trail", CLIENT, "--format", "csv")[1])))
    assert rows[6]["event"] == "break-glass-granted" and rows[6]["role"] == "social_worker"
    assert rows[6]["source_address"] == "192.0.2.9"
    bundle = json.loads(run("audit", "trail", CLIENT, "--format", "bundle")[1])
    assert bundle["type"] == "collection" and len(bundle["entry"]) == 8

    code, out = run("audit", "checkpoint")
    assert (code, out.strip()) == (0, "signed checkpoint at entry 9")
    code, out = run("audit", "verify")
    assert (code, out.strip()) == (0, "OK: 9 entries, 1 signed checkpoints verified "
                                      "(last at entry 9)")
    assert run("audit", "denied")[1].strip() == "no denied accesses"

    engine = make_engine(database_url)
    with engine.begin() as conn:
        for trigger in ("audit_entry_no_update", "audit_entry_append_only"):
            if conn.dialect.name == "sqlite" and trigger.endswith("no_update"):
                conn.execute(sa.text(f"DROP TRIGGER {trigger}"))
            elif conn.dialect.name == "postgresql" and trigger.endswith("append_only"):
                conn.execute(sa.text(f"DROP TRIGGER {trigger} ON audit_entry"))
        conn.execute(sa.text("UPDATE audit_entry SET client_id = NULL WHERE seq = 3"))
    engine.dispose()
    code, out = run("audit", "verify")
    assert code == 1
    assert out.strip() == ("FAILED: entry 3: altered: its indexed columns disagree with its "
                           "event")


def test_commands_refuse_bad_input_without_a_traceback(env: Path, database_url: str) -> None:
    _seed(database_url)
    for args, message in (
            (("consent", "add", CLIENT, "--by", "x"), "exactly one of --deny or --permit"),
            (("consent", "add", "Cnobody", "--deny", "--by", "x"), "no client Cnobody"),
            (("consent", "add", CLIENT, "--deny", "--category", "tattoos", "--by", "x"),
             "unknown sensitive category"),
            (("consent", "add", CLIENT, "--deny", "--purpose", "SELLING", "--by", "x"),
             "provision.purpose[0]: not a purpose"),
            (("consent", "withdraw", "nope", "--by", "x"), "no Consent nope"),
            (("optout", "set", "Cnobody", "--by", "x"), "no client Cnobody"),
            (("breakglass", "close", "nope", "--outcome", "fine", "--by", "x"),
             "outcome must be one of"),
            (("audit", "trail", CLIENT, "--format", "xml"), "--format must be")):
        code, out = run(*args)
        assert code == 2, (args, out)
        assert message in out and "Traceback" not in out


def test_policy_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = run("policy", "check")
    assert code == 0, out
    assert out.startswith("policy OK: 7 roles") and str(CONSENT_DIR) in out
    broken = policy_copy(tmp_path, rules="rules:\n  - id: oops\n    effect: permit\n"
                                         "    role: nurse\n    reason: x\n")
    code, out = run("policy", "check", "--dir", str(broken))
    assert code == 1
    assert out.strip() == "policy INVALID: rules.yaml: rule 'oops': unknown role 'nurse'"
    monkeypatch.setenv("UR_CONSENT_DIR", str(broken))
    assert run("policy", "check")[0] == 1
