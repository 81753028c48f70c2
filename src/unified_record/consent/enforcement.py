"""The enforcement point: every read, search and governance action passes here, is decided
by the consent engine and is written to the audit log. No web framework: the API calls it.

Build one at start-up (an invalid policy raises `PolicyError` and the service must not
start)::

    point = EnforcementPoint.from_settings(settings, engine, keyring)

Per request, describe the caller and then ask::

    ctx = AccessContext(caller, purpose=caller.purpose_of_use or request_purpose,
                        source_address=request.client.host)

    # read / vread: None for withheld AND for missing: answer both 404, identically
    result = point.authorize_read(uow.session, uow.resources, ctx, "Condition", "abc")
    result = point.authorize_read(uow.session, uow.resources, ctx, "Condition", "abc", 2)

    # search, _include/_revinclude, history, $everything, exports: gather EVERY match
    # first, filter, then page and count what is left (never the raw matches)
    shown = point.filter_resources(uow.session, uow.resources, ctx, bodies,
                                   interaction="search-type", parameters=["family"])
    page = shown.permitted[offset:offset + count]; total = len(shown.permitted)
    if shown.withheld: add the OperationOutcome warning that some data was withheld

    # resources the API assembles itself (the golden Patient, AuditEvents)
    result = point.authorize_resource(uow.session, uow.resources, ctx, golden, "read")

    # governance writes: decided, written and audited in the session; the caller commits.
    # Start them in a fresh transaction (on SQLite a transaction that has read and then
    # writes after another connection committed, an audit append say, fails "locked").
    point.record_consent(uow.session, uow.resources, ctx, consent_body)   # POST /Consent
    point.request_break_glass(uow.session, ctx, client_id, reason)
    uow.commit()

`AccessRefused` (the role may not use the purpose, or may not do this governance action) is
audited before it is raised: answer 403. `ConsentError` is a malformed or unsupported
Consent: answer 422. `AuditWriteError` means the audit log could not be written: fail
closed, return no data (500). Reasons (`Decision.reasons`) are for governance officers and
the audit log, never for the caller whose request was denied.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from unified_record.audit.events import Agent, Entity, audit_event, break_glass_entity
from unified_record.audit.log import AuditLog
from unified_record.audit.signing import load_audit_signer
from unified_record.config import Settings
from unified_record.consent.breakglass import (
    BreakGlassGrant,
    active_grants,
    close_review,
    grant_break_glass,
)
from unified_record.consent.engine import (
    Candidate,
    ClientState,
    Decision,
    Filtered,
    ResourceFacts,
    check_purpose,
    decide,
    filter_permitted,
)
from unified_record.consent.optout import clear_opt_out, is_opted_out, set_opt_out
from unified_record.consent.policy import BREAK_GLASS, Policy, load_policy
from unified_record.consent.records import (
    ConsentDirective,
    ConsentError,
    Provision,
    list_consents,
    parse_consent,
    store_consent,
    withdraw_consent,
)
from unified_record.security.caller import Caller
from unified_record.store.crypto import Cipher
from unified_record.store.driver_select import select_through_driver
from unified_record.store.governance_models import BreakGlassGrantRow, OptOutRow
from unified_record.store.membership import Membership, transaction_memo
from unified_record.store.models import (
    ClientMemberRow,
    ClientRow,
    ResourceRow,
    SearchIndexRow,
)
from unified_record.store.resources import ResourceRepository

__all__ = [
    "AccessContext",
    "AccessRefused",
    "EnforcementPoint",
    "ReadResult",
    "expect_record_facts",
    "merged_client_ids",
]

logger = logging.getLogger(__name__)

_SUBJECT_FIELDS = ("subject", "patient", "beneficiary")
_CLIENT_ID = re.compile(r"[A-Za-z0-9\-.]{1,32}")  # what a client id can be; others not logged


class AccessRefused(PermissionError):
    """The whole request is refused (audited already): answer 403."""

    def __init__(self, decision: Decision) -> None:
        super().__init__("access refused")
        self.decision = decision


@dataclass
class Memo:
    """What a transaction has already read about what is on record for clients (and, in
    `store.membership`, which client a record belongs to), so that deciding a request's
    parts, matches and withheld notice reads it once. Kept in the session and forgotten
    when its transaction ends (and by every governance write), so it never outlives what
    it was read in."""

    states: dict[str, ClientState] = field(default_factory=dict)
    facts: dict[str, set[RecordFact]] = field(default_factory=dict)  # see `record_facts`
    facts_wanted: bool = False  # read them with the states (`expect_record_facts`)

    @staticmethod
    def forget(session: Session) -> None:
        session.info.pop(_MEMO, None)
        Membership.forget(session)

    @staticmethod
    def of(session: Session) -> Memo:
        return transaction_memo(session, _MEMO, Memo)


def expect_record_facts(session: Session) -> None:
    """This transaction will ask for `record_facts` (a search's withheld notice): read them
    in the same round trip as each client's state, for the clients whose members it has
    read by then."""
    Memo.of(session).facts_wanted = True


_MEMO = "unified_record.consent.memo"
RecordFact = tuple[str, str | None, str]  # (resource type, source organisation, labels)


@event.listens_for(Session, "after_transaction_end")
def _forget_memo(session: Session, _transaction: Any) -> None:
    Memo.forget(session)


@dataclass(frozen=True)
class AccessContext:
    """Who asks, why, and from where; one per request."""

    caller: Caller
    purpose: str | None
    source_address: str | None = None

    @property
    def agent(self) -> Agent:
        return Agent(user=self.caller.sub, user_system=self.caller.issuer,
                     organisation=self.caller.organisation, role=self.caller.role,
                     oauth_client_id=self.caller.client_id)


@dataclass(frozen=True)
class ReadResult:
    """`resource` is the (redacted) body, or None when withheld or missing: the API must
    answer those two identically. `decision` is None when the resource does not exist."""

    resource: dict[str, Any] | None
    decision: Decision | None


Actor = AccessContext | str  # a caller through the API, or an operator's name (CLI)


class EnforcementPoint:
    """The consent engine and the audit log around the store (see the module docstring)."""

    def __init__(self, policy: Policy, audit: AuditLog, cipher: Cipher, *,
                 break_glass_minutes: int = 60,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.policy = policy
        self.audit = audit
        self._cipher = cipher
        self._minutes = break_glass_minutes
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine, cipher: Cipher
                      ) -> EnforcementPoint:
        """Load the policy and the audit signing key; PolicyError / ConfigError stop start-up."""
        policy = load_policy(settings.resolved_consent_dir)
        audit = AuditLog(engine, load_audit_signer(settings), settings.audit_checkpoint_every)
        return cls(policy, audit, cipher, break_glass_minutes=settings.break_glass_minutes)

    # -- writes ------------------------------------------------------------------------------

    def audit_write(self, ctx: AccessContext, interaction: str, references: Sequence[str],
                    outcome: Literal["permit", "deny"], outcome_desc: str) -> None:
        """Audit what a caller wrote (e.g. a partner's transaction Bundle): one entry, the
        resources by reference and what happened to each (`Type/id/_history/n`)."""
        self._append(ctx, interaction, outcome, None,
                     [Entity(ref, outcome="stored" if outcome == "permit" else "refused")
                      for ref in references], outcome_desc)

    # -- reads -------------------------------------------------------------------------------

    def check_purpose(self, ctx: AccessContext, interaction: str) -> Decision:
        """Refuse (audited, AccessRefused) a request whose purpose the role may not use."""
        decision = check_purpose(ctx.caller, ctx.purpose, self.policy)
        if not decision.permit:
            self._append(ctx, interaction, "deny", None, [], "purpose of use refused",
                         reasons=decision.reasons)
            raise AccessRefused(decision)
        return decision

    def authorize_read(self, session: Session, repository: ResourceRepository,
                       ctx: AccessContext, resource_type: str, resource_id: str,
                       version_id: int | None = None, *, audit_at_commit: bool = False
                       ) -> ReadResult:
        """read (or vread with `version_id`): the resource if permitted, else None.
        `audit_at_commit`: see `filter_resources`."""
        interaction = "read" if version_id is None else "vread"
        self.check_purpose(ctx, interaction)
        body = (repository.get(resource_type, resource_id) if version_id is None
                else repository.vread(resource_type, resource_id, version_id))
        if body is None:
            reference = f"{resource_type}/{resource_id}"
            if version_id is not None:
                reference += f"/_history/{version_id}"
            self._append(ctx, interaction, "none", None,
                         [Entity(reference, outcome="not-found")], None)
            return ReadResult(None, None)
        return self.authorize_resource(session, repository, ctx, body, interaction,
                                       audit_at_commit=audit_at_commit)

    def authorize_resource(self, session: Session, repository: ResourceRepository,
                           ctx: AccessContext, body: Mapping[str, Any],
                           interaction: str = "read", *, audit_at_commit: bool = False
                           ) -> ReadResult:
        """Decide one resource the API already holds (e.g. the golden Patient)."""
        shown = self.filter_resources(session, repository, ctx, [body], interaction=interaction,
                                      audit_at_commit=audit_at_commit)
        decision = shown.decisions[0][1]
        return ReadResult(shown.permitted[0] if shown.permitted else None, decision)

    def filter_resources(self, session: Session, repository: ResourceRepository,
                         ctx: AccessContext, bodies: Sequence[Mapping[str, Any]], *,
                         interaction: str = "search-type",
                         parameters: Iterable[str] = (),
                         known: Mapping[tuple[str, str], tuple[str | None, str]] | None = None,
                         audit_at_commit: bool = False) -> Filtered:
        """Decide each resource; keep the permitted ones (redacted) in order, and audit one
        entry per client concerned. Filter before paging and counting. `known`: see
        `candidates`. `audit_at_commit`: the caller returns nothing before `session`
        commits, so the entries may be written by that commit (`AuditLog.append_at_commit`)
        rather than at once."""
        self.check_purpose(ctx, interaction)
        shown = self._decide(session, repository, ctx, bodies, known)
        events = self._filtered_events(ctx, interaction, shown, list(parameters))
        if audit_at_commit:
            self.audit.append_at_commit(session, events)
        else:
            self.audit.append_many(events)  # one transaction for the whole request
        return shown

    def visible(self, session: Session, repository: ResourceRepository, ctx: AccessContext,
                bodies: Sequence[Mapping[str, Any]], *, interaction: str = "read",
                known: Mapping[tuple[str, str], tuple[str | None, str]] | None = None
                ) -> list[dict[str, Any] | None]:
        """Each resource as the caller may see it (redacted as its obligations say), or None
        where withheld; decided but not audited. For the parts of a resource the API
        assembles (the golden Patient from source Patients), which is itself decided and
        audited when returned. A purpose the role may not use is refused here already
        (AccessRefused, audited), so that it never shows as a 404."""
        self.check_purpose(ctx, interaction)
        shown = self._decide(session, repository, ctx, bodies, known)
        permitted = iter(shown.permitted)
        return [next(permitted) if decision.permit else None
                for _, decision in shown.decisions]

    def _decide(self, session: Session, repository: ResourceRepository, ctx: AccessContext,
                bodies: Sequence[Mapping[str, Any]],
                known: Mapping[tuple[str, str], tuple[str | None, str]] | None) -> Filtered:
        now = self._clock()
        candidates = self.candidates(session, bodies, known)
        states: dict[str | None, ClientState] = dict(self.client_states(
            session, repository, {c.client_id for c in candidates} - {None}, now))

        def state_of(client_id: str | None) -> ClientState:
            if client_id not in states:
                states[client_id] = self.client_state(session, repository, client_id, now)
            return states[client_id]

        return filter_permitted(ctx.caller, ctx.purpose, candidates, self.policy, state_of,
                                now)

    # -- what the engine needs from the store ------------------------------------------------

    def candidates(self, session: Session, bodies: Sequence[Mapping[str, Any]],
                   known: Mapping[tuple[str, str], tuple[str | None, str]] | None = None
                   ) -> list[Candidate]:
        """Facts (provenance, categories) and client of each body, in few queries. `known`:
        (type, id) -> (source organisation, stored labels) the caller has already read from
        the resource rows ((None, "") for a resource that is not stored, the golden Patient)."""
        known = known or {}
        by_type: dict[str, set[str]] = defaultdict(set)
        rows: dict[tuple[str, str], tuple[str | None, str]] = dict(known)
        for body in bodies:
            key = (str(body.get("resourceType")), str(body.get("id")))
            if key not in rows:
                by_type[key[0]].add(key[1])
        for resource_type, ids in by_type.items():
            stmt = sa.select(ResourceRow.id, ResourceRow.source_org,
                             ResourceRow.security_labels).where(
                ResourceRow.resource_type == resource_type, ResourceRow.id.in_(sorted(ids)))
            for rid, source_org, labels in session.execute(stmt):
                rows[resource_type, rid] = (source_org, labels)
        patients = {_patient_id(body) for body in bodies} - {None}
        clients = self.clients_of(session, {p for p in patients if p is not None})
        found = []
        for body in bodies:
            rtype, rid = str(body.get("resourceType")), str(body.get("id"))
            source_org, stored = rows.get((rtype, rid), (None, ""))
            categories = (self.policy.categories_of((body.get("meta") or {}).get("security")
                                                    or [])
                          | (frozenset(stored.split()) & self.policy.categories.keys()))
            patient = _patient_id(body)
            found.append(Candidate(clients.get(patient) if patient else None,
                                   ResourceFacts(rtype, rid, source_org, categories), body))
        return found

    def clients_of(self, session: Session, patient_ids: Iterable[str]) -> dict[str, str]:
        """Source Patient id or client id -> the active client id it belongs to (one query
        for those this transaction has not asked about yet; a retired client is followed to
        the one that absorbed it)."""
        memo = Membership.of(session).clients
        wanted = set(patient_ids)
        ids = sorted(wanted - memo.keys())
        if ids:
            memo.update(self._clients_of(session, ids))
        return {uid: memo[uid] for uid in wanted if uid in memo}

    def _clients_of(self, session: Session, ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, tuple[str, str, str | None]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            members = (sa.select(sa.literal(0), ClientMemberRow.unique_id, ClientRow.id,
                                 ClientRow.status, ClientRow.replaced_by)
                       .join(ClientRow, ClientRow.id == ClientMemberRow.client_id)
                       .where(ClientMemberRow.unique_id.in_(chunk)))
            clients = (sa.select(sa.literal(1), ClientRow.id, ClientRow.id, ClientRow.status,
                                 ClientRow.replaced_by).where(ClientRow.id.in_(chunk)))
            rows = sorted(session.execute(sa.union_all(members, clients)), key=lambda r: r[0],
                          reverse=True)
            for kind, uid, client_id, status, replaced_by in rows:  # member rows win (last)
                found[uid] = (client_id, status, replaced_by)
                if kind == 0 and status == "active":  # and an active client is its own
                    found.setdefault(client_id, (client_id, status, replaced_by))
        return {uid: (_successor(session, cid) if status == "retired" and replaced_by
                      else cid) for uid, (cid, status, replaced_by) in found.items()}

    def client_states(self, session: Session, repository: ResourceRepository,
                      client_ids: Iterable[str | None], now: datetime
                      ) -> dict[str | None, ClientState]:
        """`client_state` for many clients: one query finds the clients with something on
        record (a consent, an opt-out or a live grant); only those are read one by one and
        every other client gets the empty state. Where another client was merged into one
        of them, the merged ids are followed first (their records still count)."""
        memo = Memo.of(session).states
        asked = {c for c in client_ids if c}
        wanted = sorted(asked - memo.keys())
        if wanted:
            memo.update(self._client_states(session, repository, wanted, now))
        return {c: memo[c] for c in asked}

    def _client_states(self, session: Session, repository: ResourceRepository,
                       wanted: Sequence[str], now: datetime) -> dict[str, ClientState]:
        on_record: set[str] = set()
        merged: set[str] = set()
        memo = Memo.of(session)
        members = Membership.of(session).members if memo.facts_wanted else {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            kinds = self._on_record(session, repository, chunk, now,
                                    {c: members[c] for c in chunk if c in members},
                                    memo.facts)
            on_record |= kinds["record"]
            merged |= kinds["merged"]
        if merged:
            on_record |= self._merged_on_record(session, repository, sorted(merged), now)
        return {c: (self.client_state(session, repository, c, now) if c in on_record
                    else ClientState()) for c in wanted}

    def _on_record(self, session: Session, repository: ResourceRepository,
                   client_ids: Sequence[str], now: datetime,
                   members: Mapping[str, frozenset[str]] | None = None,
                   facts: dict[str, set[RecordFact]] | None = None) -> dict[str, set[str]]:
        """In one query: which of these clients have a Consent, an opt-out or a live
        break-glass grant under their own id ("record"), and which absorbed another
        client in a merge ("merged"). With `members` (client -> its source Patients), the
        same round trip reads those clients' `record_facts` into `facts`."""
        digests = {repository.digest("patient", c): c for c in client_ids}
        values: dict[str, Any] = {"digests": sorted(digests), "clients": list(client_ids),
                                  "now": now}
        owner: dict[str, str] = {}
        if members and facts is not None:
            owner, uids, keys = _record_keys(repository, members)
            values.update(fact_digests=keys, uids=uids)
            for client_id in members:
                facts[client_id] = set()
        rows = select_through_driver(session, _ON_RECORD_AND_FACTS if owner else _ON_RECORD,
                                     values)
        found: dict[str, set[str]] = {"record": set(), "merged": set()}
        for kind, key, *fact in rows:
            if kind == "consent":
                found["record"].add(digests[key])
            elif kind == "fact" and facts is not None:
                facts[owner[key]].add((fact[0], fact[1], fact[2] or ""))
            else:
                found["merged" if kind == "merged" else "record"].add(str(key))
        return found

    def record_facts(self, session: Session, repository: ResourceRepository,
                     client_ids: Iterable[str]) -> dict[str, set[RecordFact]]:
        """The distinct (type, source organisation, stored labels) of everything in each
        client's record: its source Patients and every live resource that refers to one.
        All a decision needs, with no decryption (the withheld notice, `consent.notice`).
        Read with the client's state where the transaction asked for that first
        (`expect_record_facts`); else in one query (two if the members are not known)."""
        memo = Memo.of(session).facts
        asked = set(client_ids)
        unread = sorted(asked - memo.keys())
        if unread:
            known = Membership.of(session).members
            members: dict[str, set[str]] = {c: set(known[c]) for c in unread if c in known}
            missing = [c for c in unread if c not in known]
            if missing:
                for uid, client_id in session.execute(
                        sa.select(ClientMemberRow.unique_id, ClientMemberRow.client_id)
                        .where(ClientMemberRow.client_id.in_(missing))):
                    members.setdefault(client_id, set()).add(uid)
            for client_id in unread:
                memo[client_id] = set()
            owner, uids, keys = _record_keys(repository, members)
            for start in range(0, len(uids), 1000):  # one hash per id: as many of each
                for key, rtype, source_org, labels in session.execute(
                        _FACTS, {"fact_digests": keys[start:start + 1000],
                                 "uids": uids[start:start + 1000]}):
                    memo[owner[key]].add((rtype, source_org, labels or ""))
        return {c: memo[c] for c in asked}

    def _merged_on_record(self, session: Session, repository: ResourceRepository,
                          survivors: Sequence[str], now: datetime) -> set[str]:
        """Those of `survivors` with a consent, opt-out or grant under an id merged into
        them (directly or through other merges)."""
        owner = {c: c for c in survivors}  # every id (merged ones too) -> its survivor
        frontier = list(survivors)
        while frontier:
            absorbed = [(rid, str(by)) for rid, by in session.execute(
                sa.select(ClientRow.id, ClientRow.replaced_by)
                .where(ClientRow.replaced_by.in_(frontier))) if rid not in owner]
            for rid, by in absorbed:
                owner[rid] = owner[by]
            frontier = sorted(rid for rid, _ in absorbed)
        ids = sorted(set(owner) - set(survivors))
        return {owner[c] for start in range(0, len(ids), 500)
                for c in self._on_record(session, repository, ids[start:start + 500],
                                         now)["record"]}

    def client_state(self, session: Session, repository: ResourceRepository,
                     client_id: str | None, now: datetime) -> ClientState:
        """Consents, opt-out and break-glass grants of a client and every id merged into it."""
        if client_id is None:
            return ClientState()
        ids = merged_client_ids(session, client_id)
        directives = []
        for consent in list_consents(repository, ids):
            try:
                directives.append(parse_consent(consent, self.policy))
            except ConsentError:
                # A stored Consent the current policy cannot read: assume the person objects.
                logger.warning("Consent %s cannot be applied under the current policy; "
                               "treated as an objection to all sharing", consent.get("id"))
                directives.append(ConsentDirective(str(consent.get("id")), client_id, "active",
                                                   (Provision(effect="deny"),)))
        grants = tuple(replace(g, client_id=client_id)
                       for g in active_grants(session, ids, now))
        return ClientState(tuple(directives), is_opted_out(session, ids), grants)

    # -- governance actions ------------------------------------------------------------------

    def request_break_glass(self, session: Session, ctx: AccessContext, client_id: str,
                            reason: str) -> BreakGlassGrant:
        """Grant BTG access to one client for UR_BREAK_GLASS_MINUTES (flagged, queued for
        review); AccessRefused if the role may not break the glass. The caller commits."""
        now = self._clock()
        Memo.forget(session)  # a grant is about to be on record
        request = replace(ctx, purpose=BREAK_GLASS)
        decision = check_purpose(ctx.caller, BREAK_GLASS, self.policy)
        if not decision.permit:
            self._append(request, "break-glass-refused", "deny", client_id, [],
                         "break-glass refused", reasons=decision.reasons, break_glass=True)
            raise AccessRefused(decision)
        if session.get(ClientRow, client_id) is None:
            raise ConsentError(f"no client {client_id}")
        grant = grant_break_glass(session, self._cipher, ctx.caller, client_id, reason,
                                  minutes=self._minutes, now=now)
        self._append(request, "break-glass-granted", "permit", client_id,
                     [break_glass_entity(grant.id, "granted")],
                     f"break-glass until {grant.expires_at.isoformat(timespec='seconds')}",
                     break_glass=True, session=session)
        return grant

    def close_break_glass(self, session: Session, by: Actor, grant_id: str, outcome: str,
                          note: str = "") -> BreakGlassGrant:
        """Close a grant's review with an outcome (audited). The caller commits."""
        Memo.forget(session)  # what is on record is about to change
        self._governance_allowed(by, "break-glass-reviewed", None)
        grant = close_review(session, self._cipher, grant_id, outcome=outcome,
                             reviewed_by=_name(by), note=note, now=self._clock())
        self._append(by, "break-glass-reviewed", "none", grant.client_id,
                     [break_glass_entity(grant.id, outcome)], f"review closed: {outcome}",
                     break_glass=True, session=session)
        return grant

    def record_consent(self, session: Session, repository: ResourceRepository, by: Actor,
                       consent: dict[str, Any]) -> dict[str, Any]:
        """Check and store a Consent (ConsentError: 422), audited. The caller commits."""
        Memo.forget(session)  # what is on record is about to change
        directive = parse_consent(consent, self.policy)
        self._governance_allowed(by, "consent-recorded", directive.client_id)
        if session.get(ClientRow, directive.client_id) is None:
            raise ConsentError(f"patient: no client {directive.client_id}")
        organisation = by.caller.organisation if isinstance(by, AccessContext) else None
        stored = store_consent(repository, consent, self.policy, organisation)
        self._append(by, "consent-recorded", "none", directive.client_id,
                     [Entity(_versioned(stored), outcome="recorded")], None, session=session)
        return stored

    def withdraw_consent(self, session: Session, repository: ResourceRepository, by: Actor,
                         consent_id: str) -> dict[str, Any]:
        """Withdraw a Consent (audited). The caller commits."""
        Memo.forget(session)  # what is on record is about to change
        current = repository.get("Consent", consent_id)
        if current is None:
            raise ConsentError(f"no Consent {consent_id}")
        client_id = parse_consent(current, self.policy).client_id
        self._governance_allowed(by, "consent-withdrawn", client_id)
        stored = withdraw_consent(repository, self.policy, consent_id)
        self._append(by, "consent-withdrawn", "none", client_id,
                     [Entity(_versioned(stored), outcome="withdrawn")], None, session=session)
        return stored

    def set_opt_out(self, session: Session, by: Actor, client_id: str, opted_out: bool
                    ) -> bool:
        """Set or clear a client's National Data Opt-out (audited); False if unchanged."""
        Memo.forget(session)  # what is on record is about to change
        subtype = "opt-out-set" if opted_out else "opt-out-cleared"
        self._governance_allowed(by, subtype, client_id)
        if session.get(ClientRow, client_id) is None:
            raise ConsentError(f"no client {client_id}")
        changed = (set_opt_out(session, client_id, recorded_by=_name(by), now=self._clock())
                   if opted_out else clear_opt_out(session, client_id))
        if changed:
            self._append(by, subtype, "none", client_id, [], None, session=session)
        return changed

    def authorize_governance(self, ctx: AccessContext, action: str,
                             client_id: str | None = None, entities: Sequence[Entity] = (),
                             outcome_desc: str | None = None) -> None:
        """A governance report through the API (audit trail, consent history, break-glass
        queue, denied accesses): AccessRefused (audited) unless the policy lets the caller's
        role read governance records for its purpose; audited when allowed too."""
        self._governance_allowed(ctx, action, client_id)
        self._append(ctx, action, "permit", client_id, entities, outcome_desc)

    # -- internals ---------------------------------------------------------------------------

    def _governance_allowed(self, by: Actor, action: str, client_id: str | None) -> None:
        """A governance write through the API needs a role the policy lets read Consent
        records for its purpose (operators at the command line are trusted)."""
        if isinstance(by, str):
            return
        decision = decide(by.caller, by.purpose, client_id,
                          ResourceFacts("Consent", "-"), self.policy, now=self._clock())
        if not decision.permit:
            self._append(by, action, "deny", client_id, [], "governance action refused",
                         reasons=decision.reasons)
            raise AccessRefused(decision)

    def _filtered_events(self, ctx: AccessContext, interaction: str, shown: Filtered,
                         parameters: list[str]) -> list[dict[str, Any]]:
        groups: dict[str | None, list[tuple[Candidate, Decision]]] = defaultdict(list)
        for candidate, decision in shown.decisions:
            groups[candidate.client_id].append((candidate, decision))
        query = ([Entity(role="24", detail=(("parameters", ",".join(sorted(parameters))),))]
                 if parameters else [])
        if not groups:
            return [self._event(ctx, interaction, "permit", None, query, "no matches")]
        events = []
        for client_id, decided in groups.items():
            entities = [Entity(_versioned(c.body),
                               outcome="returned" if d.permit else "withheld",
                               reason=None if d.permit else "; ".join(d.reasons),
                               detail=(("obligations", ",".join(d.obligations)),)
                               if d.permit and d.obligations else ())
                        for c, d in decided]
            returned = sum(d.permit for _, d in decided)
            outcome: Literal["permit", "deny"] = "permit" if returned else "deny"
            events.append(self._event(ctx, interaction, outcome, client_id, query + entities,
                                      f"{returned} returned, {len(decided) - returned} "
                                      "withheld"))
        return events

    def _append(self, by: Actor, subtype: str, decision: Literal["permit", "deny", "none"],
                client_id: str | None, entities: Sequence[Entity], outcome_desc: str | None,
                *, reasons: Sequence[str] = (), break_glass: bool | None = None,
                session: Session | None = None) -> None:
        self.audit.append(self._event(by, subtype, decision, client_id, entities, outcome_desc,
                                      reasons=reasons, break_glass=break_glass),
                          session=session)

    def _event(self, by: Actor, subtype: str, decision: Literal["permit", "deny", "none"],
               client_id: str | None, entities: Sequence[Entity], outcome_desc: str | None,
               *, reasons: Sequence[str] = (), break_glass: bool | None = None
               ) -> dict[str, Any]:
        ctx = by if isinstance(by, AccessContext) else None
        agent = ctx.agent if ctx else Agent.operator(by if isinstance(by, str) else "?")
        purpose = ctx.purpose if ctx else None
        if reasons:
            outcome_desc = "; ".join(filter(None, (outcome_desc, *reasons)))
        return audit_event(
            subtype=subtype, agent=agent, recorded=self._clock(), decision=decision,
            purpose=purpose if purpose in self.policy.purposes else None,
            client_id=client_id if client_id and _CLIENT_ID.fullmatch(client_id) else None,
            entities=entities,
            source_address=ctx.source_address if ctx else None, outcome_desc=outcome_desc,
            break_glass=purpose == BREAK_GLASS if break_glass is None else break_glass)


# What is on record for clients, in one statement built once (`_on_record`): Consents
# indexed under the client (by the blind index of the reference), an opt-out, a live
# break-glass grant, and clients merged into it. Rows: (kind, key, *extra).
_CLIENTS: sa.BindParameter[Any] = sa.bindparam("clients", expanding=True)
_NOW: sa.BindParameter[Any] = sa.bindparam("now")


def _on_record_parts(*extra: Any) -> list[sa.Select[Any]]:
    return [
        sa.select(sa.literal_column("'consent'").label("kind"),
                  SearchIndexRow.value_hash.label("key"), *extra)
        .where(SearchIndexRow.resource_type == "Consent", SearchIndexRow.param == "patient",
               SearchIndexRow.value_hash.in_(sa.bindparam("digests", expanding=True))),
        sa.select(sa.literal_column("'opt-out'"), OptOutRow.client_id, *extra)
        .where(OptOutRow.client_id.in_(_CLIENTS)),
        sa.select(sa.literal_column("'grant'"), BreakGlassGrantRow.client_id, *extra)
        .where(BreakGlassGrantRow.client_id.in_(_CLIENTS), BreakGlassGrantRow.expires_at > _NOW,
               BreakGlassGrantRow.granted_at <= _NOW),
        sa.select(sa.literal_column("'merged'"), ClientRow.replaced_by, *extra)
        .where(ClientRow.replaced_by.in_(_CLIENTS))]


# The record facts (`record_facts`): (source Patient id or the hash of a reference to it,
# type, source organisation, labels), distinct: every live resource that refers to one of
# the source Patients, and the source Patients themselves.
def _fact_parts(*kind: Any) -> list[sa.Select[Any]]:
    return [
        sa.select(*kind, SearchIndexRow.value_hash, ResourceRow.resource_type,
                  ResourceRow.source_org, ResourceRow.security_labels)
        .join(ResourceRow, sa.and_(ResourceRow.resource_type == SearchIndexRow.resource_type,
                                   ResourceRow.id == SearchIndexRow.resource_id))
        .where(SearchIndexRow.param == "patient",
               SearchIndexRow.value_hash.in_(sa.bindparam("fact_digests", expanding=True)),
               ResourceRow.deleted.is_(False))
        .distinct(),
        sa.select(*kind, ResourceRow.id, ResourceRow.resource_type, ResourceRow.source_org,
                  ResourceRow.security_labels)
        .where(ResourceRow.resource_type == "Patient",
               ResourceRow.id.in_(sa.bindparam("uids", expanding=True)),
               ResourceRow.deleted.is_(False))]


_ON_RECORD: sa.CompoundSelect[Any] = sa.union_all(*_on_record_parts())
_FACTS: sa.CompoundSelect[Any] = sa.union(*_fact_parts())
# Both in one round trip, for a search that will decide the withheld notice.
_ON_RECORD_AND_FACTS: sa.CompoundSelect[Any] = sa.union_all(
    *_on_record_parts(sa.null(), sa.null(), sa.null()),
    *_fact_parts(sa.literal_column("'fact'")))


def _record_keys(repository: ResourceRepository, members: Mapping[str, Iterable[str]]
                 ) -> tuple[dict[str, str], list[str], list[str]]:
    """For the facts query: (each source Patient id and the blind-index hash of a reference
    to it -> its client, the ids, the hashes)."""
    owner: dict[str, str] = {}
    uids: list[str] = []
    keys: list[str] = []
    for client_id, records in members.items():
        for uid in records:
            key = repository.digest("patient", f"Patient/{uid}")
            owner[uid] = owner[key] = client_id
            uids.append(uid)
            keys.append(key)
    return owner, sorted(uids), sorted(keys)


def _patient_id(body: Mapping[str, Any]) -> str | None:
    if body.get("resourceType") == "Patient":
        return str(body.get("id"))
    for name in _SUBJECT_FIELDS:
        value = body.get(name)
        reference = value.get("reference") if isinstance(value, dict) else None
        if isinstance(reference, str) and reference.startswith("Patient/"):
            return reference.removeprefix("Patient/")
    if body.get("resourceType") == "AuditEvent":
        for entity in body.get("entity") or []:
            if (entity.get("role") or {}).get("code") == "1":
                return str((entity.get("what") or {}).get("reference", "")).partition("/")[2]
    return None


def _successor(session: Session, client_id: str) -> str:
    """Follow replaced-by from a retired client to the one that absorbed it."""
    seen = {client_id}
    client = session.get(ClientRow, client_id)
    while client is not None and client.status == "retired" and client.replaced_by:
        if client.replaced_by in seen:
            break
        seen.add(client.replaced_by)
        client_id = client.replaced_by
        client = session.get(ClientRow, client_id)
    return client_id


def merged_client_ids(session: Session, client_id: str) -> set[str]:
    """The client and every retired client merged into it (directly or through others):
    an objection or opt-out recorded under an old id still counts after a merge."""
    ids = {client_id}
    frontier = [client_id]
    while frontier:
        absorbed = set(session.scalars(sa.select(ClientRow.id).where(
            ClientRow.replaced_by.in_(frontier)))) - ids
        ids |= absorbed
        frontier = sorted(absorbed)
    return ids


def _versioned(body: Mapping[str, Any]) -> str:
    reference = f"{body.get('resourceType')}/{body.get('id')}"
    version = (body.get("meta") or {}).get("versionId")
    return f"{reference}/_history/{version}" if version else reference


def _name(by: Actor) -> str:
    return by if isinstance(by, str) else by.caller.sub
