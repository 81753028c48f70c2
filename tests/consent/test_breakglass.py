"""Break-glass: a reasoned grant for one client, short-lived, flagged and reviewed."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
import sqlalchemy as sa
from consent_support import C1, C2, KEY_1, Clock, caller
from sqlalchemy.orm import Session

from unified_record.consent import (
    AccessContext,
    AccessRefused,
    BreakGlassError,
    ConsentError,
    EnforcementPoint,
)
from unified_record.consent.breakglass import list_grants
from unified_record.consent.records import build_consent
from unified_record.security import Caller, KeyRing
from unified_record.store import ResourceRepository, make_session_factory, rotate_keys

REASON = "Unconscious in A&E, ambulance crew report overdose"
SW = caller("social_worker", org="E08000035")


def _btg(who: Caller = SW) -> AccessContext:
    return AccessContext(who, "BTG", "192.0.2.7")


def test_a_grant_opens_one_client_for_a_short_time(
        point: EnforcementPoint, session: Session, repo: ResourceRepository,
        clock: Clock) -> None:
    assert point.authorize_read(session, repo, _btg(), "Condition", "cond-mh").resource is None
    session.rollback()
    grant = point.request_break_glass(session, _btg(), C1, REASON)
    session.commit()
    assert grant.expires_at - grant.granted_at == timedelta(minutes=30)
    shown = point.authorize_read(session, repo, _btg(), "Condition", "cond-mh")
    assert shown.resource is not None and shown.decision is not None
    assert shown.decision.obligations == ["mark-restricted"]
    assert any(f"break-glass grant {grant.id}" in r for r in shown.decision.reasons)
    # another client, another user: not covered
    assert point.authorize_read(session, repo, _btg(), "Condition", "cond-two").resource is None
    other = caller("social_worker", org="E08000035", sub="user-2")
    assert point.authorize_read(session, repo, _btg(other), "Condition", "cond-mh"
                                ).resource is None
    clock.now += timedelta(minutes=31)
    assert point.authorize_read(session, repo, _btg(), "Condition", "cond-mh").resource is None


def test_break_glass_overrides_an_objection_and_is_flagged(
        point: EnforcementPoint, session: Session, repo: ResourceRepository) -> None:
    point.record_consent(session, repo, "officer-1",
                         build_consent(point.policy, client_id=C1, effect="deny"))
    point.request_break_glass(session, _btg(), C1, REASON)
    session.commit()
    treat = AccessContext(SW, "TREAT")
    assert point.authorize_read(session, repo, treat, "Condition", "cond-plain").resource is None
    assert point.authorize_read(session, repo, _btg(), "Condition", "cond-plain").resource
    flagged = point.audit.entries(break_glass=True)
    kinds = [e.event["subtype"][0]["code"] for e in flagged]
    assert kinds == ["break-glass-granted", "read"]
    assert all(e.event["meta"]["security"][0]["code"] == "BTG" for e in flagged)
    assert REASON not in str([e.event for e in point.audit.entries()])


def test_the_review_queue_and_closing_it(
        point: EnforcementPoint, session: Session, keyring: KeyRing, clock: Clock) -> None:
    first = point.request_break_glass(session, _btg(), C1, REASON)
    clock.now += timedelta(seconds=1)
    second = point.request_break_glass(session, _btg(), C2, "second reason")
    session.commit()
    queue = list_grants(session, keyring)
    assert [(r.grant.id, r.reason) for r in queue] == [(first.id, REASON),
                                                       (second.id, "second reason")]
    point.close_break_glass(session, "officer-1", first.id, "appropriate", "checked notes")
    session.commit()
    assert [r.grant.id for r in list_grants(session, keyring)] == [second.id]
    closed = [r for r in list_grants(session, keyring, open_only=False) if r.outcome]
    assert (closed[0].outcome, closed[0].reviewed_by, closed[0].note) == (
        "appropriate", "officer-1", "checked notes")
    with pytest.raises(BreakGlassError, match="already closed"):
        point.close_break_glass(session, "officer-1", first.id, "appropriate")
    session.rollback()
    with pytest.raises(BreakGlassError, match="outcome must be one of"):
        point.close_break_glass(session, "officer-1", second.id, "fine")
    with pytest.raises(BreakGlassError, match="no break-glass grant"):
        point.close_break_glass(session, "officer-1", "nope", "appropriate")
    reviewed = point.audit.entries(client_id=C1)[-1]
    assert reviewed.event["subtype"][0]["code"] == "break-glass-reviewed"
    assert reviewed.break_glass


def test_only_roles_that_may_break_the_glass_can_ask(
        point: EnforcementPoint, session: Session) -> None:
    with pytest.raises(AccessRefused):
        point.request_break_glass(session, _btg(caller("partner_system")), C1, REASON)
    with pytest.raises(AccessRefused):  # an id that cannot be a client is not logged
        point.request_break_glass(session, _btg(caller("analyst")), "P/" + "x" * 80, REASON)
    with pytest.raises(BreakGlassError, match="written reason"):
        point.request_break_glass(session, _btg(), C1, "   ")
    with pytest.raises(ConsentError, match="no client"):
        point.request_break_glass(session, _btg(), "Cnobody", REASON)
    refused = point.audit.entries(decision="deny")
    assert refused[1].client_id is None
    assert refused[0].event["subtype"][0]["code"] == "break-glass-refused"
    assert refused[0].break_glass and refused[0].client_id == C1


def test_reasons_are_encrypted_and_rotate_with_the_key_ring(
        point: EnforcementPoint, session: Session, engine: sa.Engine,
        keyring: KeyRing) -> None:
    grant = point.request_break_glass(session, _btg(), C1, REASON)
    point.close_break_glass(session, "officer-1", grant.id, "referred", "sent to the DPO")
    session.commit()
    with engine.connect() as conn:
        raw = conn.execute(sa.text("SELECT reason FROM break_glass_grant")).scalar_one()
        note = conn.execute(sa.text("SELECT note FROM break_glass_review")).scalar_one()
    assert REASON.encode() not in bytes(raw) and b"DPO" not in bytes(note)
    new_ring = KeyRing({"k2": os.urandom(32), "k1": KEY_1}, "k2")
    assert rotate_keys(make_session_factory(engine), new_ring) >= 2
    with make_session_factory(engine)() as fresh:
        [review] = list_grants(fresh, new_ring, open_only=False)
    assert (review.reason, review.note) == (REASON, "sent to the DPO")
    with engine.connect() as conn:
        kids = set(conn.execute(sa.text(
            "SELECT key_id FROM break_glass_grant UNION SELECT key_id FROM break_glass_review"
        )).scalars())
    assert kids == {"k2"}
