"""The review queue of possible matches, and data stewards' decisions on it.

A *review item* is a scored pair of the latest runs (`linkage_pair`) whose two records sit in
different active clients and that no steward has decided on: possible matches in the review
band, and auto-link pairs held back because a record had too little to match on. Highest
match weight first.

A *decision* is stored with who, when and why (`link_decision`; the reason is free text, so
it is encrypted) and becomes standing constraints (`link_constraint`) that every later run
respects, full (`cluster_records`) or incremental (`match_new_record`):

* `link A B`: must-link A and B. Their clients merge now (the oldest id survives, as in a
  full run).
* `not_a_match A B`: cannot-link A and B. If they share a client, that client is split now.
* `unlink X`: X leaves its client: cannot-link X and every other member. The rest of the
  client stays together where its own links hold it (a record that was joined only through X
  leaves too, as the next full run would decide).

The latest decision on a pair replaces an earlier one. A decision that would contradict a
standing one (linking two clients that a not-a-match keeps apart) is refused with the pair
to revisit. Applying a decision re-clusters only the clients concerned, with the same rules
as a full run (`cluster_records`), so the index after the decision is what the next full run
gives for those records; each decision is a `linkage_run` of kind "decision" and its changes
are in `link_history` naming the decision.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from unified_record.linkage.features import patient_features
from unified_record.linkage.index import (
    IndexChanges,
    assign_clients,
    cluster_records,
    finish_run,
    load_constraints,
    lock_index,
    start_run,
    too_little_to_match,
)
from unified_record.linkage.model import DEFAULT_AUTO_LINK_THRESHOLD
from unified_record.store.crypto import BlindIndexer, Cipher, decision_aad
from unified_record.store.models import (
    ClientMemberRow,
    LinkagePairRow,
    LinkConstraintRow,
    LinkDecisionRow,
    ResourceRow,
)
from unified_record.store.resources import ResourceRepository

__all__ = [
    "DecisionError",
    "DecisionKind",
    "DecisionOutcome",
    "DecisionRecord",
    "ReviewItem",
    "decide",
    "list_decisions",
    "review_queue",
]

DecisionKind = Literal["link", "not_a_match", "unlink"]
_KINDS: tuple[str, ...] = ("link", "not_a_match", "unlink")


class DecisionError(ValueError):
    """A decision that cannot be taken (unknown record, contradiction, missing reason)."""


@dataclass(frozen=True)
class ReviewItem:
    """A possible match for a steward to decide (ids and scores only)."""

    unique_id_l: str
    unique_id_r: str
    client_l: str
    client_r: str
    match_probability: float
    match_weight: float
    run_id: int


@dataclass(frozen=True)
class DecisionRecord:
    """A stored decision, as a steward or governance officer reads it back."""

    id: str
    kind: str
    unique_id_l: str
    unique_id_r: str | None
    client_id: str | None
    decided_by: str
    decided_at: datetime
    reason: str
    run_id: int


@dataclass(frozen=True)
class DecisionOutcome:
    """What a decision did: its id, the run that applied it, and the index changes."""

    decision_id: str
    run_id: int
    constraints: int  # must-link or cannot-link pairs written
    changes: IndexChanges
    clients: dict[str, str]  # each named record -> its client after the decision


def review_queue(session: Session, *, limit: int = 50, offset: int = 0) -> list[ReviewItem]:
    """Undecided pairs across two active clients, highest match weight first."""
    left, right = aliased(ClientMemberRow), aliased(ClientMemberRow)
    decided = sa.select(LinkConstraintRow.unique_id_l).where(
        LinkConstraintRow.unique_id_l == LinkagePairRow.unique_id_l,
        LinkConstraintRow.unique_id_r == LinkagePairRow.unique_id_r)
    stmt = (
        sa.select(LinkagePairRow, left.client_id, right.client_id)
        .join(left, left.unique_id == LinkagePairRow.unique_id_l)
        .join(right, right.unique_id == LinkagePairRow.unique_id_r)
        .where(left.client_id != right.client_id, ~sa.exists(decided))
        .order_by(LinkagePairRow.match_weight.desc(), LinkagePairRow.unique_id_l,
                  LinkagePairRow.unique_id_r)
        .limit(limit).offset(offset))
    return [ReviewItem(pair.unique_id_l, pair.unique_id_r, client_l, client_r,
                       pair.match_probability, pair.match_weight, pair.run_id)
            for pair, client_l, client_r in session.execute(stmt)]


def decide(
    session: Session,
    cipher: Cipher,
    blind_index: BlindIndexer,
    kind: DecisionKind,
    record: str,
    other: str | None = None,
    *,
    decided_by: str,
    reason: str,
    auto_link_threshold: float = DEFAULT_AUTO_LINK_THRESHOLD,
) -> DecisionOutcome:
    """Store a steward's decision and apply it to the index now (see the module docstring).

    `record`, `other`: source Patient ids in the index (`other` is not given for "unlink").
    Writes go into `session`'s transaction; the caller commits.
    """
    if kind not in _KINDS:
        raise DecisionError(f"unknown decision {kind!r}; use one of {', '.join(_KINDS)}")
    if not decided_by.strip():
        raise DecisionError("a decision needs the steward who took it")
    if not reason.strip():
        raise DecisionError("a decision needs a reason")
    if (kind == "unlink") != (other is None):
        raise DecisionError("unlink names one record; link and not_a_match name two")
    if other is not None and other == record:
        raise DecisionError("a decision needs two different records")

    lock_index(session)
    named = [record] if other is None else [record, other]
    member_of = _clients_of(session, named)
    missing = [uid for uid in named if uid not in member_of]
    if missing:
        raise DecisionError(f"not in the client index: {', '.join(missing)} (run a linkage "
                            "first, or check the id)")

    # The clients concerned and every one of their members.
    owners = sorted(set(member_of.values()))
    scope = list(session.scalars(sa.select(ClientMemberRow.unique_id)
                                 .where(ClientMemberRow.client_id.in_(owners))))
    if kind == "unlink" and len(scope) == 1:
        raise DecisionError(f"{record} is the only record of its client; nothing to unlink")

    new: list[tuple[str, str, bool]] = []  # (left, right, must_link)
    if kind == "unlink":
        new = [(*_ordered(record, uid), False) for uid in scope if uid != record]
    else:
        assert other is not None
        new = [(*_ordered(record, other), kind == "link")]

    must, cannot = load_constraints(session)
    replaced = {(left, right) for left, right, _ in new}
    must = [pair for pair in must if pair not in replaced]
    cannot = [pair for pair in cannot if pair not in replaced]
    must += [(left, right) for left, right, is_must in new if is_must]
    cannot += [(left, right) for left, right, is_must in new if not is_must]
    if kind == "link":
        assert other is not None
        _check_link(session, must, cannot, record, other)

    run_id = start_run(session, kind="decision")
    decision_id = str(uuid.uuid4())
    envelope = cipher.encrypt(reason.strip().encode(), decision_aad(decision_id))
    session.add(LinkDecisionRow(
        id=decision_id, kind=kind, unique_id_l=record, unique_id_r=other,
        client_id=member_of[record], decided_by=decided_by.strip()[:128],
        decided_at=datetime.now(UTC), reason=envelope, key_id=cipher.key_id_of(envelope),
        run_id=run_id))
    pairs = [(left, right) for left, right, _ in new]
    session.execute(sa.delete(LinkConstraintRow).where(
        sa.tuple_(LinkConstraintRow.unique_id_l, LinkConstraintRow.unique_id_r).in_(pairs)))
    session.execute(sa.insert(LinkConstraintRow), [
        {"unique_id_l": left, "unique_id_r": right, "must_link": is_must,
         "decision_id": decision_id} for left, right, is_must in new])

    clusters, scores = _recluster(session, cipher, blind_index, scope, must, cannot,
                                  auto_link_threshold)
    model_version = session.scalar(
        sa.select(ClientMemberRow.model_version)
        .where(ClientMemberRow.unique_id.in_(scope), ClientMemberRow.model_version.is_not(None))
        .limit(1))
    changes = assign_clients(session, clusters, run_id, scope=scope, scores=scores,
                             model_version=model_version,
                             note=f"steward decision {decision_id} ({kind})")
    after = _clients_of(session, named)
    finish_run(session, run_id, {"decision": kind, "records": len(scope),
                                 "created": changes.created, "retired": changes.retired,
                                 "joined": changes.joined, "left": changes.left})
    return DecisionOutcome(decision_id, run_id, len(new), changes, after)


def list_decisions(session: Session, cipher: Cipher, *, record: str | None = None,
                   limit: int = 100) -> list[DecisionRecord]:
    """Decisions, newest first; with `record`, only those naming it."""
    stmt = sa.select(LinkDecisionRow)
    if record is not None:
        stmt = stmt.where(sa.or_(LinkDecisionRow.unique_id_l == record,
                                 LinkDecisionRow.unique_id_r == record))
    stmt = stmt.order_by(LinkDecisionRow.decided_at.desc(), LinkDecisionRow.id).limit(limit)
    return [DecisionRecord(
        id=row.id, kind=row.kind, unique_id_l=row.unique_id_l, unique_id_r=row.unique_id_r,
        client_id=row.client_id, decided_by=row.decided_by, decided_at=row.decided_at,
        reason=cipher.decrypt(row.reason, decision_aad(row.id)).decode(), run_id=row.run_id)
        for row in session.scalars(stmt)]


def _clients_of(session: Session, records: list[str]) -> dict[str, str]:
    rows = session.execute(sa.select(ClientMemberRow.unique_id, ClientMemberRow.client_id)
                           .where(ClientMemberRow.unique_id.in_(records)))
    return {uid: client_id for uid, client_id in rows}


def _ordered(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def _check_link(session: Session, must: list[tuple[str, str]],
                cannot: list[tuple[str, str]], record: str, other: str) -> None:
    """Refuse a link that would join two clients a standing not-a-match keeps apart."""
    together = set(session.scalars(
        sa.select(ClientMemberRow.unique_id)
        .where(ClientMemberRow.client_id.in_(sa.select(ClientMemberRow.client_id).where(
            ClientMemberRow.unique_id.in_([record, other]))))))
    for left, right in cannot:
        if left in together and right in together:
            raise DecisionError(
                f"a standing not-a-match decision keeps {left} and {right} apart, and this "
                "link would put them in one client; decide on that pair first")


def _recluster(session: Session, cipher: Cipher, blind_index: BlindIndexer,
               scope: list[str], must: list[tuple[str, str]],
               cannot: list[tuple[str, str]], auto_link_threshold: float
               ) -> tuple[dict[str, str], dict[str, tuple[float | None, float | None]]]:
    """Cluster the records in `scope` as a full run would, from their stored pairs:
    (unique_id -> cluster label, each record's best applied link)."""
    inside = set(scope)
    repo = ResourceRepository(session, cipher, blind_index)
    little: set[str] = set()
    replaced: dict[str, str] = {}
    for row in session.scalars(sa.select(ResourceRow).where(
            ResourceRow.resource_type == "Patient", ResourceRow.id.in_(scope))):
        body = repo.get("Patient", row.id)
        if body is None:
            continue
        features = patient_features(body, source_feed=row.source_feed,
                                    source_org=row.source_org,
                                    source_record_id=row.source_record_id)
        if features["active"] is False and isinstance(features["replaced_by"], str):
            replaced[row.id] = features["replaced_by"]
        elif too_little_to_match(features):
            little.add(row.id)
    pairs = [(p.unique_id_l, p.unique_id_r, p.match_probability, p.match_weight)
             for p in session.scalars(sa.select(LinkagePairRow).where(
                 LinkagePairRow.unique_id_l.in_(scope), LinkagePairRow.unique_id_r.in_(scope)))]
    clusters, scores, _, _ = cluster_records(
        scope, pairs, auto_link_threshold=auto_link_threshold, too_little=little,
        replaced_by=replaced,
        must_link=[p for p in must if p[0] in inside and p[1] in inside],
        cannot_link=[p for p in cannot if p[0] in inside and p[1] in inside])
    return clusters, scores

