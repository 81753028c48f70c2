"""The unified client index: clusters of source Patients under stable client ids.

A full run (`run_full_linkage`) reads every stored source Patient into an in-memory DuckDB,
scores candidate pairs with the saved Splink model (training and saving one first if there
is none), clusters the pairs at or above the auto-link threshold, and then applies the
clusters to the index with `assign_clients`, all in one database transaction: a run that
fails or is killed before its commit leaves the previous index intact and in use.

Stable ids (`assign_clients`):

* Each existing client is *inherited* by the new cluster that holds most of its current
  members (ties: the cluster whose smallest shared member id sorts first). So an unchanged
  cluster keeps its id, new records joining a cluster take its id, and when a client
  splits the largest part keeps the id while the other parts get new (or other inherited)
  ids.
* When a new cluster inherits several clients (a merge), the **oldest** survives: the one
  created by the earliest run, then the smallest id. The others are retired, with
  `replaced_by` naming the survivor. The oldest id is the one people have used longest.
* A cluster that inherits no client gets a new id ("C" + 12 random hex digits).
* A client none of whose records is in any cluster any more (its Patients were deleted) is
  retired without a successor.

Every change is written to `link_history` with the run: `created`, `joined` and `left` (per
record), `merged` (on the survivor, naming the retired id), `split` (on the client that lost
records to another cluster) and `retired`. A run that changes nothing writes nothing.

Too little to match on: a record with no valid NHS number that also lacks a full date of
birth or a surname never auto-links: it stays its own client (its pairs still reach the
review band and are kept for review). Records with an NHS number are never "too little".

Inactive Patients (retired by an HL7 A40 merge, `active` false with `replaced-by` the
survivor) are not scored: they join the client of their survivor (following chains), or
stay alone if the survivor is not in the store.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from unified_record.linkage.features import iter_patient_features, load_features
from unified_record.linkage.model import (
    DEFAULT_AUTO_LINK_THRESHOLD,
    DEFAULT_REVIEW_THRESHOLD,
    LinkageModel,
    linker_for,
    load_model,
    predict,
    save_model,
    train,
)
from unified_record.store.crypto import BlindIndexer, Cipher
from unified_record.store.models import (
    ClientMemberRow,
    ClientRow,
    LinkagePairRow,
    LinkageRunRow,
    LinkConstraintRow,
    LinkHistoryRow,
)
from unified_record.store.unit_of_work import UnitOfWork

__all__ = [
    "MODEL_FILE_NAME",
    "IndexChanges",
    "LinkageReport",
    "assign_clients",
    "cluster_records",
    "current_clusters",
    "finish_run",
    "load_constraints",
    "lock_index",
    "new_client_id",
    "run_full_linkage",
    "start_run",
    "too_little_to_match",
]

MODEL_FILE_NAME = "linkage-model.json"
_INDEX_LOCK = 0x5552_4349  # PostgreSQL advisory lock key of the client index ("URCI")
Scores = Mapping[str, tuple[float | None, float | None]]
ProgressCallback = Callable[[str], None]


def new_client_id() -> str:
    """A new client id: "C" and 12 random hex digits (no meaning, nothing personal)."""
    return "C" + os.urandom(6).hex()


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class IndexChanges:
    """What one `assign_clients` call changed."""

    created: int = 0  # new client ids
    retired: int = 0  # client ids retired (merged into another, or left empty)
    merged: int = 0  # clients absorbed into a survivor (each also counts as retired)
    split: int = 0  # clients that lost records to another cluster
    joined: int = 0  # records that moved into a client (new records included)
    left: int = 0  # records that left a client (moved or no longer present)
    history: int = 0  # link_history rows written

    @property
    def unchanged(self) -> bool:
        return self.history == 0


def lock_index(session: Session) -> None:
    """One index writer at a time (full run or incremental match), until the transaction
    ends: a concurrent writer waits here, then sees this one's ids. On PostgreSQL an
    advisory lock; SQLite has a single writer anyway."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _INDEX_LOCK})


def start_run(session: Session, model_version: str | None = None, kind: str = "full") -> int:
    """Add a `running` linkage_run row (in the caller's transaction) and return its id.

    `kind`: "full" (a whole re-run), "incremental" (one new record matched) or "decision"
    (a steward's decision applied)."""
    run = LinkageRunRow(started_at=_now(), model_version=model_version, status="running",
                        kind=kind)
    session.add(run)
    session.flush()
    return run.id


def finish_run(session: Session, run_id: int, counts: Mapping[str, object],
               status: str = "completed") -> None:
    run = session.get(LinkageRunRow, run_id)
    if run is None:
        raise ValueError(f"no linkage run {run_id}")
    run.finished_at = _now()
    run.status = status
    run.counts = json.dumps(dict(counts), sort_keys=True)
    session.flush()


def current_clusters(session: Session) -> dict[str, str]:
    """unique_id -> client id, from the index as it stands."""
    rows = session.execute(sa.select(ClientMemberRow.unique_id, ClientMemberRow.client_id))
    return {uid: cid for uid, cid in rows}


def assign_clients(
    session: Session,
    clusters: Mapping[str, str],
    run_id: int,
    *,
    scores: Scores | None = None,
    model_version: str | None = None,
    scope: Collection[str] | None = None,
    note: str | None = None,
) -> IndexChanges:
    """Apply `clusters` (unique_id -> any cluster label) to the index under stable ids.

    The rules are in the module docstring. Writes go into `session`'s transaction; the
    caller commits (or rolls back, leaving the index exactly as it was).

    `scope`: re-assign only these records (every member of the clients concerned, e.g. when
    a steward's decision reshapes two clients); the rest of the index is not read or changed.
    `clusters` must then cover exactly the scope. Default: the whole index.
    `note`: why, added to every link_history row written (e.g. the steward decision's id).
    """
    scores = scores or {}
    at = _now()
    changes = IndexChanges()
    history: list[dict[str, object]] = []

    def log(client_id: str, action: str, unique_id: str | None = None,
            detail: str | None = None) -> None:
        if note:
            detail = f"{detail}; {note}" if detail else note
        history.append({"run_id": run_id, "client_id": client_id, "unique_id": unique_id,
                        "action": action, "detail": detail, "at": at})

    lock_index(session)
    if scope is None:
        members = {m.unique_id: m for m in session.scalars(sa.select(ClientMemberRow))}
        clients = {c.id: c for c in session.scalars(
            sa.select(ClientRow).where(ClientRow.status == "active"))}
        taken = set(session.scalars(sa.select(ClientRow.id)))  # retired ids are never reused
    else:
        if set(scope) != set(clusters):
            raise ValueError("a scoped assignment needs a cluster for every record in scope")
        members = {m.unique_id: m for m in session.scalars(
            sa.select(ClientMemberRow).where(ClientMemberRow.unique_id.in_(sorted(scope))))}
        owners = sorted({m.client_id for m in members.values()})
        sizes = session.execute(
            sa.select(ClientMemberRow.client_id, sa.func.count())
            .where(ClientMemberRow.client_id.in_(owners)).group_by(ClientMemberRow.client_id))
        in_scope = Counter(m.client_id for m in members.values())
        if any(in_scope[client_id] != count for client_id, count in sizes):
            raise ValueError("a scoped assignment must hold every member of its clients")
        clients = {c.id: c for c in session.scalars(
            sa.select(ClientRow).where(ClientRow.id.in_(owners),
                                       ClientRow.status == "active"))}
        taken = set(session.scalars(sa.select(ClientRow.id).where(ClientRow.id.in_(owners))))

    groups: dict[str, list[str]] = defaultdict(list)
    for uid, label in clusters.items():
        groups[label].append(uid)
    for uids in groups.values():
        uids.sort()
    # A deterministic order of the new clusters: by their smallest member id.
    ordered = sorted(groups.values(), key=lambda uids: uids[0])

    # 1. Each old client's heir: the cluster holding most of its members (ties: the cluster
    #    whose smallest shared member sorts first).
    overlap: dict[str, Counter[int]] = defaultdict(Counter)
    first_shared: dict[tuple[str, int], str] = {}
    for index, uids in enumerate(ordered):
        for uid in uids:
            member = members.get(uid)
            if member is not None:
                overlap[member.client_id][index] += 1
                first_shared.setdefault((member.client_id, index), uid)
    heirs: dict[int, list[str]] = defaultdict(list)
    for client_id, counts in overlap.items():
        heir = min(counts, key=lambda i: (-counts[i], first_shared[(client_id, i)]))
        heirs[heir].append(client_id)

    def age(client_id: str) -> tuple[int, str]:
        client = clients.get(client_id)
        return (client.created_run if client is not None else -1, client_id)

    # 2. Each cluster's id: its inherited client (the oldest, if several), else a new one.
    final: dict[str, str] = {}  # unique_id -> client id
    cluster_ids: list[str] = []
    for index, uids in enumerate(ordered):
        inherited = sorted(heirs.get(index, []), key=age)
        if inherited:
            survivor = inherited[0]
            for absorbed in inherited[1:]:
                log(survivor, "merged", detail=f"absorbed {absorbed}")
                log(absorbed, "retired", detail=f"merged into {survivor}")
                _retire(session, clients, absorbed, run_id, replaced_by=survivor)
                changes.merged += 1
                changes.retired += 1
        else:
            survivor = new_client_id()
            while survivor in taken or (scope is not None
                                        and session.get(ClientRow, survivor) is not None):
                survivor = new_client_id()
            taken.add(survivor)
            client = ClientRow(id=survivor, status="active", replaced_by=None,
                               created_run=run_id, updated_run=run_id)
            session.add(client)
            clients[survivor] = client
            log(survivor, "created")
            changes.created += 1
        cluster_ids.append(survivor)
        for uid in uids:
            final[uid] = survivor

    # 3. Splits: an old client whose members now sit in clusters other than its heir's.
    lost: dict[str, set[str]] = defaultdict(set)  # old client -> clients its records went to
    for uid, member in members.items():
        new = final.get(uid)
        if new is not None and new != member.client_id and member.client_id in clients \
                and clients[member.client_id].status == "active":
            lost[member.client_id].add(new)
    for client_id in sorted(lost):
        log(client_id, "split", detail="records moved to " + ", ".join(sorted(lost[client_id])))
        changes.split += 1

    # 4. Members: move, add and remove rows; only rows that differ are written.
    touched: set[str] = set()
    inserts: list[dict[str, object]] = []
    for uid in sorted(final):
        client_id = final[uid]
        probability, weight = scores.get(uid, (None, None))
        member = members.get(uid)
        if member is None:
            inserts.append({"unique_id": uid, "client_id": client_id, "run_id": run_id,
                            "match_probability": probability, "match_weight": weight,
                            "model_version": model_version})
            log(client_id, "joined", uid)
            changes.joined += 1
            touched.add(client_id)
            continue
        if member.client_id != client_id:
            log(member.client_id, "left", uid, detail=f"to {client_id}")
            log(client_id, "joined", uid, detail=f"from {member.client_id}")
            changes.left += 1
            changes.joined += 1
            touched.update((client_id, member.client_id))
            member.client_id = client_id
            member.run_id = run_id
        if (member.match_probability, member.match_weight, member.model_version) != (
                probability, weight, model_version):
            member.match_probability = probability
            member.match_weight = weight
            member.model_version = model_version
            member.run_id = run_id
    for uid in sorted(set(members) - set(final)):
        member = members[uid]
        log(member.client_id, "left", uid, detail="record no longer present")
        changes.left += 1
        touched.add(member.client_id)
        session.delete(member)
    if inserts:
        session.execute(sa.insert(ClientMemberRow), inserts)

    # 5. Clients left with no records are retired without a successor.
    still_used = set(cluster_ids)
    for client_id in sorted(clients):
        client = clients[client_id]
        if client.status == "active" and client_id not in still_used:
            log(client_id, "retired", detail="no records left")
            _retire(session, clients, client_id, run_id, replaced_by=None)
            changes.retired += 1
    for client_id in touched & still_used:
        clients[client_id].updated_run = run_id

    if history:
        session.execute(sa.insert(LinkHistoryRow), history)
    changes.history = len(history)
    session.flush()
    return changes


def _retire(session: Session, clients: Mapping[str, ClientRow], client_id: str, run_id: int,
            *, replaced_by: str | None) -> None:
    client = clients.get(client_id) or session.get(ClientRow, client_id)
    if client is None:
        return
    client.status = "retired"
    client.replaced_by = replaced_by
    client.updated_run = run_id


# -- the full run ------------------------------------------------------------------------------


def load_constraints(session: Session) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The stewards' standing decisions as (must-link pairs, cannot-link pairs)."""
    must: list[tuple[str, str]] = []
    cannot: list[tuple[str, str]] = []
    for left, right, must_link in session.execute(sa.select(
            LinkConstraintRow.unique_id_l, LinkConstraintRow.unique_id_r,
            LinkConstraintRow.must_link)):
        (must if must_link else cannot).append((left, right))
    return must, cannot


def too_little_to_match(row: Mapping[str, object]) -> bool:
    """No valid NHS number, and no full date of birth or no surname: never auto-linked."""
    if row.get("nhs_number"):
        return False
    return not row.get("dob") or not row.get("surname")


@dataclass
class LinkageReport:
    """Counts of a full run (no personal data)."""

    run_id: int
    model_version: str
    model_trained: bool
    records: int = 0  # source Patients read
    scored: int = 0  # active Patients scored by the model
    inactive: int = 0  # merged-away Patients, placed with their survivor
    too_little: int = 0  # records with too little to match on (never auto-linked)
    links: int = 0  # pairs at or above the auto-link threshold that were applied
    review_pairs: int = 0  # pairs in the review band (incl. auto-link pairs held back)
    decisions: int = 0  # steward must-link and cannot-link pairs respected
    clients: int = 0  # active clients after the run
    changes: IndexChanges = field(default_factory=IndexChanges)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class _Components:
    """Union-find over record ids, with cannot-link constraints; a component's label is its
    smallest member id."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.parent = {uid: uid for uid in ids}
        self.forbidden: dict[str, set[str]] = {}  # root -> records its members must not join

    def find(self, uid: str) -> str:
        root = uid
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[uid] != root:
            self.parent[uid], uid = root, self.parent[uid]
        return root

    def forbid(self, a: str, b: str) -> None:
        self.forbidden.setdefault(self.find(a), set()).add(b)
        self.forbidden.setdefault(self.find(b), set()).add(a)

    def may_union(self, a: str, b: str) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        small, other = sorted((ra, rb), key=lambda r: len(self.forbidden.get(r, ())))
        return all(self.find(x) != other for x in self.forbidden.get(small, ()))

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if rb < ra:
                ra, rb = rb, ra
            self.parent[rb] = ra
            if rb in self.forbidden:
                self.forbidden.setdefault(ra, set()).update(self.forbidden.pop(rb))

    def labels(self) -> dict[str, str]:
        return {uid: self.find(uid) for uid in self.parent}


def cluster_records(
    ids: Iterable[str],
    pairs: Iterable[tuple[str, str, float, float]],
    *,
    auto_link_threshold: float = DEFAULT_AUTO_LINK_THRESHOLD,
    too_little: Collection[str] = (),
    replaced_by: Mapping[str, str] | None = None,
    must_link: Iterable[tuple[str, str]] = (),
    cannot_link: Iterable[tuple[str, str]] = (),
) -> tuple[dict[str, str], dict[str, tuple[float | None, float | None]], int, int]:
    """Connected components of the auto-link pairs: (unique_id -> cluster label, scores,
    auto-links applied, pairs left for review).

    In order: a merged-away record (`replaced_by`) joins its survivor's cluster, following
    chains, when the survivor is among `ids` (the source system merged them); then the
    stewards' `must_link` pairs; then the scored pairs, best first. No union ever puts two
    `cannot_link` records in one cluster, not even a source merge: a steward's unlink or
    not-a-match is the last word on the index (the merge stays in the source record). A
    scored pair links only if it reaches the threshold and neither record has too little to
    match on; a pair kept apart only by a cannot-link was decided, so it is neither a link
    nor left for review; every other pair counts for review. A record's score is its best
    applied link (probability, weight). Labels are the smallest member id; the pairs are
    sorted first, so the result does not depend on their order.
    """
    components = _Components(sorted(ids))
    known = components.parent
    for a, b in cannot_link:
        if a in known and b in known:
            components.forbid(a, b)
    replaced = dict(replaced_by or {})
    for uid in sorted(replaced):
        if uid not in known:
            continue
        survivor, seen = replaced[uid], {uid}
        while survivor in replaced and survivor not in seen:  # follow chains of merges
            seen.add(survivor)
            survivor = replaced[survivor]
        if survivor in known and survivor not in seen \
                and components.may_union(uid, survivor):
            components.union(uid, survivor)
    for a, b in sorted(must_link):
        if a in known and b in known and components.may_union(a, b):
            components.union(a, b)

    best: dict[str, tuple[float | None, float | None]] = {}
    links = review = 0
    for left, right, probability, weight in sorted(pairs, key=lambda p: (-p[2], p[0], p[1])):
        if probability >= auto_link_threshold and left not in too_little \
                and right not in too_little:
            if not components.may_union(left, right):
                continue
            links += 1
            components.union(left, right)
            for uid in (left, right):
                held = best.get(uid, (None, None))[0]
                if held is None or probability > held:
                    best[uid] = (probability, weight)
        else:
            review += 1
    return components.labels(), best, links, review


def split_records(con: duckdb.DuckDBPyConnection
                  ) -> tuple[list[str], set[str], dict[str, str], set[str]]:
    """Split the records in table `features`: (every id, the active ones, which are copied
    to table `scored` for the model, A40-retired id -> its survivor, the active ones with
    too little to match on)."""
    rows = con.execute(
        "select unique_id, active, replaced_by, nhs_number, dob, surname from features"
    ).fetchall()
    active: set[str] = set()
    replaced: dict[str, str] = {}
    little: set[str] = set()
    for uid, is_active, replaced_by, nhs, dob, surname in rows:
        if is_active is False:
            if replaced_by:
                replaced[uid] = replaced_by
            continue
        active.add(uid)
        if too_little_to_match({"nhs_number": nhs, "dob": dob, "surname": surname}):
            little.add(uid)
    con.execute("create or replace table scored as "
                "select * from features where active is not false")
    return [uid for uid, *_ in rows], active, replaced, little


def run_full_linkage(
    bind: Engine | sessionmaker[Session],
    cipher: Cipher,
    blind_index: BlindIndexer,
    *,
    model_path: Path | str | None = None,
    progress: ProgressCallback | None = None,
    auto_link_threshold: float = DEFAULT_AUTO_LINK_THRESHOLD,
    review_threshold: float = DEFAULT_REVIEW_THRESHOLD,
    backend: str = "duckdb",
    spark_master: str | None = None,
) -> LinkageReport:
    """Score every stored source Patient, cluster, and switch the index in one transaction.

    `model_path`: the saved model to use; if the file does not exist, a model is trained on
    the current records and saved there (default: `UR_DATA_DIR/linkage-model.json`).
    `backend`: where the pairs are scored, "duckdb" (in process) or "spark" (Splink's Spark
    backend with the same saved model; `spark_master` e.g. "spark://host:7077", default
    local mode). Training, clustering and the index update are the same either way.
    """
    if backend not in ("duckdb", "spark"):
        raise ValueError(f"unknown linkage backend {backend!r}; use duckdb or spark")
    if not 0.0 <= review_threshold <= auto_link_threshold <= 1.0:
        raise ValueError("need 0 <= review threshold <= auto-link threshold <= 1")
    say = progress or (lambda _stage: None)
    if model_path is None:
        from unified_record.config import load_settings

        model_path = load_settings().data_dir / MODEL_FILE_NAME
    path = Path(model_path)

    con = duckdb.connect()  # in memory: the features are plaintext personal data
    try:
        say("reading records")
        with UnitOfWork(bind, cipher, blind_index) as uow:
            records = load_features(con, iter_patient_features(uow))
        all_ids, active, replaced, little = split_records(con)

        trained = False
        if path.exists():
            say("loading model")
            model: LinkageModel = load_model(path)
        else:
            say("training model")
            model = train(con, "scored")
            path.parent.mkdir(parents=True, exist_ok=True)
            save_model(model, path)
            trained = True

        pairs: list[tuple[str, str, float, float]] = []
        if len(active) >= 2 and backend == "spark":
            from unified_record.linkage.spark import DEFAULT_MASTER, score_pairs_spark

            say("scoring pairs on Spark")
            pairs = score_pairs_spark(con.sql("select * from scored").to_arrow_table(), model,
                                      min_probability=review_threshold,
                                      master=spark_master or DEFAULT_MASTER)
        elif len(active) >= 2:
            say("scoring pairs")
            linker = linker_for(con, "scored", model)
            predictions = predict(linker, review_threshold)
            pairs = [(str(a), str(b), float(p), float(w)) for a, b, p, w in con.execute(
                "select unique_id_l, unique_id_r, match_probability, match_weight "
                f"from {predictions.physical_name}").fetchall()]
    finally:
        con.close()

    say("clustering")
    with UnitOfWork(bind, cipher, blind_index) as uow:
        must, cannot = load_constraints(uow.session)
    clusters, scores, links, review = cluster_records(
        all_ids, pairs, auto_link_threshold=auto_link_threshold, too_little=little,
        replaced_by=replaced, must_link=must, cannot_link=cannot)

    say("updating the index")
    with UnitOfWork(bind, cipher, blind_index) as uow:
        session = uow.session
        run_id = start_run(session, model.model_version)
        changes = assign_clients(session, clusters, run_id, scores=scores,
                                 model_version=model.model_version)
        session.execute(sa.delete(LinkagePairRow))
        if pairs:
            session.execute(sa.insert(LinkagePairRow), [
                {"unique_id_l": a, "unique_id_r": b, "run_id": run_id,
                 "match_probability": p, "match_weight": w} for a, b, p, w in pairs])
        active_clients = session.scalar(
            sa.select(sa.func.count()).select_from(ClientRow).where(ClientRow.status == "active"))
        report = LinkageReport(
            run_id=run_id, model_version=model.model_version, model_trained=trained,
            records=records, scored=len(active), inactive=records - len(active),
            too_little=len(little), links=links, review_pairs=review,
            decisions=len(must) + len(cannot),
            clients=int(active_clients or 0), changes=changes)
        counts = report.to_json()
        counts.pop("run_id")
        finish_run(session, run_id, counts)
        uow.commit()
    return report
