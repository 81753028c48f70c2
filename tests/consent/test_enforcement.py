"""The enforcement point over the store: decisions, redaction, audit entries, fail-closed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from consent_support import C1, C2, Clock, caller
from sqlalchemy.orm import Session

from unified_record.audit import AuditSigner, AuditWriteError, verify_audit_log
from unified_record.consent import AccessContext, AccessRefused, EnforcementPoint, enforcement
from unified_record.consent.enforcement import expect_record_facts
from unified_record.consent.notice import record_withholds
from unified_record.store import ResourceRepository
from unified_record.store.driver_select import select_through_driver
from unified_record.store.membership import Membership

DOC = AccessContext(caller("nhs_clinician"), "TREAT", "192.0.2.10")
SW = AccessContext(caller("social_worker", org="E08000035"), "TREAT", "192.0.2.11")
STEWARD = AccessContext(caller("data_steward"), "RECORDMGT")
ANALYST = AccessContext(caller("analyst"), "HOPERAT")


def _verify(point: EnforcementPoint, signer: AuditSigner) -> None:
    point.audit.checkpoint()
    report = verify_audit_log(point.audit._engine, {signer.key_id: signer.public_key})
    assert report.ok, report.summary()


def test_a_permitted_read_returns_the_resource_and_is_audited(
        point: EnforcementPoint, session: Session, repo: ResourceRepository,
        signer: AuditSigner) -> None:
    result = point.authorize_read(session, repo, DOC, "Condition", "cond-plain")
    assert result.resource is not None and result.resource["id"] == "cond-plain"
    assert result.decision is not None and result.decision.permit
    [entry] = point.audit.entries()
    assert (entry.client_id, entry.decision, entry.break_glass) == (C1, "permit", False)
    event = entry.event
    assert event["subtype"][0]["code"] == "read" and event["action"] == "R"
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
    assert {"reference": "Condition/cond-plain/_history/1"} in [e.get("what")
                                                              for e in event["entity"]]
    agents = {a["type"]["coding"][0]["code"]: a for a in event["agent"]}
    assert agents["IRCP"]["who"]["identifier"]["value"] == "user-1"
    assert agents["organisation"]["who"]["identifier"]["value"] == "RZ1"
    assert agents["110153"]["network"]["address"] == "192.0.2.10"
    _verify(point, signer)


def test_withheld_and_missing_look_the_same_to_the_caller(
        point: EnforcementPoint, session: Session, repo: ResourceRepository) -> None:
    withheld = point.authorize_read(session, repo, SW, "Condition", "cond-mh")
    missing = point.authorize_read(session, repo, SW, "Condition", "no-such-id")
    assert withheld.resource is None and missing.resource is None
    assert withheld.decision is not None and not withheld.decision.permit
    denied, not_found = point.audit.entries()
    assert denied.decision == "deny" and denied.client_id == C1
    details = {d["type"]: d["valueString"] for e in denied.event["entity"]
               for d in e.get("detail", [])}
    assert details["outcome"] == "withheld" and "sensitive-health-social-care" in details[
        "reason"]
    assert not_found.decision == "none" and not_found.client_id is None


def test_no_names_or_content_in_the_audit_log(
        point: EnforcementPoint, session: Session, repo: ResourceRepository,
        engine: sa.Engine) -> None:
    point.authorize_read(session, repo, DOC, "Patient", "p-acute")
    point.filter_resources(session, repo, DOC, [repo.get("Condition", "cond-plain") or {}],
                           parameters=["family", "birthdate"])
    with engine.connect() as conn:
        text = " ".join(conn.execute(sa.text("SELECT event FROM audit_entry")).scalars())
    assert "Quixblatterwick" not in text and "free text" not in text
    assert "birthdate,family" in text  # parameter names only


def test_a_version_read_uses_labels_added_later(
        point: EnforcementPoint, session: Session, repo: ResourceRepository) -> None:
    body = repo.get("Condition", "cond-plain")
    assert body is not None
    repo.put({**body, "meta": {}}, source_feed="feed", source_org="RZ1",
             source_record_id="cond-plain", security_labels=("hiv",))
    session.commit()
    assert point.authorize_read(session, repo, SW, "Condition", "cond-plain", 1
                                ).resource is None
    assert point.authorize_read(session, repo, DOC, "Condition", "cond-plain", 1
                                ).resource is not None


def test_a_purpose_the_role_may_not_use_is_refused_and_audited(
        point: EnforcementPoint, session: Session, repo: ResourceRepository) -> None:
    ctx = AccessContext(caller("partner_system"), "HRESCH")
    with pytest.raises(AccessRefused):
        point.authorize_read(session, repo, ctx, "Condition", "cond-plain")
    with pytest.raises(AccessRefused):
        point.filter_resources(session, repo, AccessContext(caller("nhs_clinician"), None), [])
    refused = point.audit.entries(decision="deny")
    assert len(refused) == 2
    assert "may not use purpose HRESCH" in refused[0].event["outcomeDesc"]


def test_search_filters_before_counting_and_audits_each_client(
        point: EnforcementPoint, session: Session, repo: ResourceRepository) -> None:
    bodies = [repo.get(t, i) or {} for t, i in (("Condition", "cond-plain"),
                                               ("Condition", "cond-mh"),
                                               ("Flag", "flag-sg"),
                                               ("Condition", "cond-two"))]
    shown = point.filter_resources(session, repo, SW, bodies, parameters=["code"])
    assert [r["id"] for r in shown.permitted] == ["cond-plain", "flag-sg", "cond-two"]
    assert shown.withheld == 1
    restricted = shown.permitted[1]["meta"]["security"]
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
            "code": "R", "display": "restricted"} in restricted
    entries = {e.client_id: e for e in point.audit.entries()}
    assert set(entries) == {C1, C2}
    assert entries[C1].event["outcomeDesc"] == "2 returned, 1 withheld"


def test_the_steward_sees_demographics_only(
        point: EnforcementPoint, session: Session, repo: ResourceRepository) -> None:
    patient = point.authorize_read(session, repo, STEWARD, "Patient", "p-acute").resource
    assert patient is not None
    assert "extension" not in patient and patient["name"]
    assert patient["meta"]["tag"][0]["code"] == "SUBSETTED"
    assert point.authorize_read(session, repo, STEWARD, "Condition", "cond-plain"
                                ).resource is None
    golden = {"resourceType": "Patient", "id": C1, "name": [{"family": "X"}],
              "meta": {"security": [{"system":
                                     "https://unified-record.example/CodeSystem/sensitivity",
                                     "code": "safeguarding"}]}}
    shown = point.authorize_resource(session, repo, STEWARD, golden)
    assert shown.resource is not None and shown.decision is not None
    assert shown.decision.obligations == ["demographics-only"]
    assert point.audit.entries()[-1].client_id == C1


def test_opt_out_denies_planning_not_care(
        point: EnforcementPoint, session: Session, repo: ResourceRepository) -> None:
    assert point.authorize_read(session, repo, ANALYST, "Condition", "cond-plain").resource
    session.rollback()  # a write starts its own transaction (SQLite: no stale read snapshot)
    assert point.set_opt_out(session, "officer-1", C1, True)
    assert not point.set_opt_out(session, "officer-1", C1, True)
    session.commit()
    assert point.authorize_read(session, repo, ANALYST, "Condition", "cond-plain"
                                ).resource is None
    assert point.authorize_read(session, repo, DOC, "Condition", "cond-plain").resource
    assert point.authorize_read(session, repo, ANALYST, "Condition", "cond-two").resource
    session.rollback()
    assert point.set_opt_out(session, "officer-1", C1, False)
    session.commit()
    assert point.authorize_read(session, repo, ANALYST, "Condition", "cond-plain").resource
    kinds = [e.event["subtype"][0]["code"] for e in point.audit.entries(client_id=C1)]
    assert "opt-out-set" in kinds and "opt-out-cleared" in kinds


def test_an_unwritable_audit_log_fails_closed(
        point: EnforcementPoint, session: Session, repo: ResourceRepository,
        engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_chain_head"))
    with pytest.raises(AuditWriteError):
        point.authorize_read(session, repo, DOC, "Condition", "cond-plain")
    with pytest.raises(AuditWriteError):
        point.filter_resources(session, repo, DOC, [repo.get("Condition", "cond-plain") or {}])


def test_governance_writes_through_the_api_need_a_governance_role(
        point: EnforcementPoint, session: Session, repo: ResourceRepository,
        clock: Clock) -> None:
    from unified_record.consent.records import build_consent

    body: dict[str, Any] = build_consent(point.policy, client_id=C1, effect="deny", now=clock())
    with pytest.raises(AccessRefused):
        point.record_consent(session, repo, SW, body)
    officer = AccessContext(caller("governance_officer"), "HCOMPL")
    stored = point.record_consent(session, repo, officer, body)
    session.commit()
    assert stored["meta"]["versionId"] == "1"
    assert point.authorize_read(session, repo, DOC, "Condition", "cond-plain").resource is None


def test_client_states_find_records_under_ids_merged_through_a_chain(
        point: EnforcementPoint, session: Session, repo: ResourceRepository,
        clock: Clock) -> None:
    """An opt-out recorded under C_OLDER, which was merged into C_OLD, which was merged into
    C1, still belongs to C1; C2, with nothing on record, gets the empty state."""
    from consent_support import C_OLD

    from unified_record.consent.engine import ClientState
    from unified_record.consent.optout import set_opt_out
    from unified_record.store.models import ClientRow

    session.add(ClientRow(id="C-OLDER", status="retired", replaced_by=C_OLD, created_run=1,
                          updated_run=3))
    set_opt_out(session, "C-OLDER", recorded_by="officer-1", now=clock())
    session.commit()
    states = point.client_states(session, repo, [C1, C2, None], clock())
    assert states[C1].opt_out is True
    assert states[C2] == ClientState()
    assert set(states) == {C1, C2}


@contextmanager
def sent(session: Session, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The statements `session` sends meanwhile, SQLAlchemy's and those the enforcement point
    sends through the driver (`select_through_driver`, which SQLAlchemy's events miss on
    PostgreSQL), each once."""
    statements: list[str] = []
    inside: list[bool] = []

    def through_driver(session: Session, statement: Any, values: Any) -> Any:
        inside.append(True)
        try:
            return select_through_driver(session, statement, values)
        finally:
            inside.pop()
            statements.append(str(statement.compile(dialect=session.get_bind().dialect)))

    def count(*args: Any) -> None:
        if not inside and str(args[2]) != "BEGIN":  # SQLite's, emitted by the engine
            statements.append(str(args[2]))

    monkeypatch.setattr(enforcement, "select_through_driver", through_driver)
    engine = session.get_bind()
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


def test_what_is_on_record_is_read_once_per_transaction(
        point: EnforcementPoint, session: Session, repo: ResourceRepository,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Deciding a request's parts, its matches and its notice reads a client's state once;
    a new transaction reads it afresh, so a consent recorded meanwhile counts."""
    with sent(session, monkeypatch) as statements:
        assert point.authorize_read(session, repo, DOC, "Condition", "cond-plain").resource
        first = list(statements)
        assert point.authorize_read(session, repo, DOC, "Condition", "cond-mh").resource
        again = statements[len(first):]

    def about_clients(found: list[str]) -> list[str]:
        return [s for s in found if "client_member" in s or "national_opt_out" in s]

    assert about_clients(first) and not about_clients(again)
    session.rollback()
    point.set_opt_out(session, "officer-1", C1, True)
    session.commit()
    assert point.client_states(session, repo, [C1], datetime.now(UTC))[C1].opt_out


def test_record_facts_read_with_the_states_are_those_read_alone(
        point: EnforcementPoint, session: Session, repo: ResourceRepository,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A search that will decide the withheld notice reads its clients' record facts in the
    same query as their states: the same facts as the notice's own query finds, with no
    further statement; and the notice follows them."""
    expected = {C1: {("Patient", "RZ1", ""), ("Patient", "E08000035", ""),
                     ("Condition", "RZ1", ""), ("Condition", "RZ1", "mental_health"),
                     ("Condition", "RZ2", ""), ("Flag", "E08000035", "safeguarding")},
                C2: {("Patient", "RZ1", ""), ("Condition", "RZ1", "")}}
    assert point.record_facts(session, repo, [C1, C2]) == expected  # read alone
    session.rollback()

    with sent(session, monkeypatch) as statements:
        expect_record_facts(session)
        membership = Membership.of(session)
        membership.learn_members(C1, ["p-acute", "p-council"])
        membership.learn_members(C2, ["p-two"])
        point.client_states(session, repo, [C1, C2], datetime.now(UTC))
        read = list(statements)  # and, as C_OLD was merged into C1, what is on record for it
        assert "national_opt_out" in read[0] and "'fact'" in read[0]
        assert point.record_facts(session, repo, [C1, C2]) == expected
        assert record_withholds(point, session, repo, SW, [C1])  # safeguarding, mental health
        assert not record_withholds(point, session, repo, SW, [C2])
        assert statements == read
