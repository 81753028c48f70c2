"""Incremental matching: place one source Patient stored after the last full run.

`match_new_record` selects candidates through the blind index (keyed hashes only: the
database never sees a plaintext name), decrypts just those Patients, builds their feature
rows (`linkage.features.patient_features`) and scores each pair with the saved model's
parameters in pure Python (`PairScorer`): the level of every comparison is computed by a
Python re-implementation of the SQL conditions in `linkage.model`, and the match weight is
the prior plus the sum of log2(m/u) plus Splink's term-frequency adjustments, so the score
equals Splink's `predict()` for the same pair (tested to 1e-6). Evaluating the model's SQL
conditions with DuckDB on a small in-memory table of pairs instead was measured at about
10 ms per call for 10 pairs (levels only), against 0.4 ms for this scorer.

Candidates, one query per blocking rule of the model, through the blind index:

* the same NHS number (`block_on("nhs_number")`);
* the same birth date and the same Soundex of the surname or the same given name
  (`block_on("surname_soundex", "dob")`, `block_on("dob", "first_name")`);
* the same postcode and the same birth date, or the same postcode and a same given name
  (`block_on("postcode", "dob")`, `block_on("postcode", "first_name")`);
* the same e-mail (`block_on("email")`, blind-index key `email`).

Not served: surname or phone with the birth year (`block_on("surname", "dob_year")`,
`block_on("phone", "dob_year")`). Their blind-index keys exist (`family`, `phone`,
`birthyear`), but joining them cost too much (p95 56 ms against 5 ms at 100,000 people); a
new record reachable only through them becomes a new client until the next full run.

At most `max_candidates` candidates are scored: NHS-number hits first, then date-of-birth
rules, then the rest.

Decision, with the bands of the full run: the best pair at or above the auto-link
threshold joins that candidate's client, unless either record has too little to match on
(`index.too_little_to_match`), which makes it a review item instead; a best pair in the
review band makes a new client and keeps the pair(s) in `linkage_pair` for review; else a
new client. Every pair at or above the review threshold is written to `linkage_pair`, as a
full run does. Stewards' decisions hold here too: a record with a must-link decision joins
that record's client whatever the scores, and a candidate whose client holds a record the
new one must not be linked with (a not-a-match or unlink decision) is never joined. Each
match is a `linkage_run` of kind "incremental" (the run id on its link_history and member
rows); the latest completed full run is the index it was matched against. The caller
commits.

Term frequencies: Splink adjusts exact first-name, surname and middle-name agreements by
how common the value is in the scored table. Without a plaintext table, the default
estimates them from blind-index counts (rows of `family` / `given` with the value's hash
over the number of records the last full run scored); `given` counts middle names too, so
common first names are slightly over-counted. Pass exact `term_frequencies` (e.g. from
`term_frequencies_from_features`) for Splink's figures exactly.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from unified_record.fhir.uk_core import NHS_NUMBER_SYSTEM
from unified_record.ingest.search_values import fold_name, index_values
from unified_record.linkage.features import patient_features
from unified_record.linkage.index import (
    finish_run,
    lock_index,
    new_client_id,
    start_run,
    too_little_to_match,
)
from unified_record.linkage.model import (
    DEFAULT_AUTO_LINK_THRESHOLD,
    DEFAULT_REVIEW_THRESHOLD,
    NICKNAMES,
    LinkageModel,
    ModelError,
    build_settings,
    load_model,
)
from unified_record.store.crypto import BlindIndexer, Cipher
from unified_record.store.models import (
    ClientMemberRow,
    ClientRow,
    LinkagePairRow,
    LinkageRunRow,
    LinkConstraintRow,
    LinkHistoryRow,
    ResourceRow,
    SearchIndexRow,
)
from unified_record.store.resources import ResourceRepository

__all__ = [
    "DEFAULT_MAX_CANDIDATES",
    "AlreadyIndexedError",
    "IndexMatcher",
    "MatchOutcome",
    "NoIndexError",
    "PairScore",
    "PairScorer",
    "match_new_record",
    "scorer_for",
    "term_frequencies_from_features",
]

Row = Mapping[str, object]
TermFrequencies = Mapping[str, Mapping[str, float]]  # column -> value -> share of records
Decision = Literal["joined", "review", "new"]

DEFAULT_MAX_CANDIDATES = 200
_TF_COLUMNS = ("first_name", "surname", "middle_names")


class NoIndexError(RuntimeError):
    """There is no completed full run to match against."""


class AlreadyIndexedError(ValueError):
    """The Patient is already a member of the client index."""


# -- string similarity, as DuckDB computes it ---------------------------------------------------


def jaro_winkler(a: str, b: str) -> float:
    """Jaro-Winkler similarity (prefix weight 0.1, up to 4 letters, boost above 0.7)."""
    if a == b:
        return 1.0
    la, lb = len(a), len(b)
    if not la or not lb:
        return 0.0
    window = max(max(la, lb) // 2 - 1, 0)
    a_hit = [False] * la
    b_hit = [False] * lb
    matches = 0
    for i, ch in enumerate(a):
        for j in range(max(0, i - window), min(lb, i + window + 1)):
            if not b_hit[j] and b[j] == ch:
                a_hit[i] = b_hit[j] = True
                matches += 1
                break
    if not matches:
        return 0.0
    transpositions = 0
    j = 0
    for i in range(la):
        if a_hit[i]:
            while not b_hit[j]:
                j += 1
            if a[i] != b[j]:
                transpositions += 1
            j += 1
    m = float(matches)
    sim = (m / la + m / lb + (m - transpositions // 2) / m) / 3.0
    if sim > 0.7:
        prefix = 0
        for x, y in zip(a[:4], b[:4], strict=False):
            if x != y:
                break
            prefix += 1
        sim += prefix * 0.1 * (1.0 - sim)
    return sim


def levenshtein(a: str, b: str) -> int:
    if a == b:
        return 0
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


# -- the comparison levels of linkage.model, in Python ------------------------------------------
# Each function returns the index of the level (in the comparison's level list, the null level
# first) whose SQL condition is the first to hold. SQL's NULL is None here; every condition is
# monotone in its comparisons (no NOT), so "a comparison with NULL is false" gives SQL's result.

_NICKNAMES = frozenset(
    (min(a, b), max(a, b)) for group in NICKNAMES for a in group for b in group if a != b)


def _same_house(l: Row, r: Row) -> bool:  # noqa: E741 - l/r as in Splink's SQL
    if l["postcode"] is None or l["postcode"] != r["postcode"]:
        return False
    hl, hr = l["house_number"], r["house_number"]
    if hl is not None and hl == hr:
        return True
    line = l["address_line1"]
    return hl is None and hr is None and line is not None and line == r["address_line1"]


def _within(word: object, words: object) -> bool:
    """`(' ' || words || ' ') like ('% ' || word || ' %')` for folded names (no wildcards)."""
    return (isinstance(word, str) and isinstance(words, str)
            and f" {word} " in f" {words} ")


def _jw(a: object, b: object, threshold: float) -> bool:
    return isinstance(a, str) and isinstance(b, str) and jaro_winkler(a, b) >= threshold


def _nhs_level(l: Row, r: Row, house: bool) -> int:  # noqa: E741
    a, b = l["nhs_number"], r["nhs_number"]
    if a is None or b is None:
        return 0
    return 1 if a == b else 2


def _first_name_level(l: Row, r: Row, house: bool) -> int:  # noqa: E741
    a, b = l["first_name"], r["first_name"]
    if not isinstance(a, str) or not isinstance(b, str):
        return 0
    if a == b:
        return 1
    if (min(a, b), max(a, b)) in _NICKNAMES:
        return 2
    jw = jaro_winkler(a, b)
    if jw >= 0.92:
        return 3
    if _within(a, r["middle_names"]) or _within(b, l["middle_names"]):
        return 4
    if jw >= 0.88:
        return 5
    return 6


def _middle_names_level(l: Row, r: Row, house: bool) -> int:  # noqa: E741
    a, b = l["middle_names"], r["middle_names"]
    if not isinstance(a, str) or not isinstance(b, str):
        return 0
    if a == b:
        return 1
    if jaro_winkler(a, b) >= 0.88:
        return 2
    if _within(r["first_name"], a) or _within(l["first_name"], b):
        return 3
    if a[:1] == b[:1]:
        return 4
    return 5


def _surname_level(l: Row, r: Row, house: bool) -> int:  # noqa: E741
    a, b = l["surname"], r["surname"]
    if not isinstance(a, str) or not isinstance(b, str):
        return 0
    if house:
        return 1 if a == b else 2
    if a == b:
        return 3
    if (min(len(a), len(b)) >= 3 and abs(len(a) - len(b)) >= 3
            and (a.startswith(b) or b.startswith(a) or a.endswith(b) or b.endswith(a))):
        return 4
    jw = jaro_winkler(a, b)
    if jw >= 0.92:
        return 5
    if jw >= 0.88:
        return 6
    sa_, sb = l["surname_soundex"], r["surname_soundex"]
    if sa_ is not None and sa_ == sb:
        return 7
    return 8


def _dob_transposed(a: str, b: str) -> bool:
    return a[0:4] == b[0:4] and a[5:7] == b[8:10] and a[8:10] == b[5:7]


def _dob_one_out(a: str, b: str, ya: object, yb: object) -> bool:
    if a[5:10] == b[5:10] and isinstance(ya, int) and isinstance(yb, int) and abs(ya - yb) == 1:
        return True
    return a[0:7] == b[0:7] and abs(int(a[8:10]) - int(b[8:10])) == 1


def _dob_level(l: Row, r: Row, house: bool) -> int:  # noqa: E741
    a, b = l["dob"], r["dob"]
    if not isinstance(a, str) or not isinstance(b, str):
        return 0
    ya, yb = l["dob_year"], r["dob_year"]
    if house:
        if a == b:
            return 1
        near = (_dob_transposed(a, b) or _dob_one_out(a, b, ya, yb)
                or levenshtein(a, b) <= 1)
        return 2 if near else 3
    if a == b:
        return 4
    if _dob_transposed(a, b):
        return 5
    if _dob_one_out(a, b, ya, yb):
        return 6
    if levenshtein(a, b) <= 1:
        return 7
    if ya is not None and ya == yb:
        return 8
    return 9


def _sex_level(l: Row, r: Row, house: bool) -> int:  # noqa: E741
    a, b = l["sex"], r["sex"]
    if a is None or b is None or a == "unknown" or b == "unknown":
        return 0
    return 1 if a == b else 2


def _address_level(l: Row, r: Row, house: bool) -> int:  # noqa: E741
    if l["postcode"] is None or r["postcode"] is None:
        return 0
    if house:
        return 1
    if l["postcode"] == r["postcode"]:
        return 2
    if l["postcode_sector"] is not None and l["postcode_sector"] == r["postcode_sector"]:
        return 3
    if l["postcode_district"] is not None and l["postcode_district"] == r["postcode_district"]:
        return 4
    return 5


def _exact_level(column: str) -> Callable[[Row, Row, bool], int]:
    def level(l: Row, r: Row, house: bool) -> int:  # noqa: E741
        a, b = l[column], r[column]
        if a is None or b is None:
            return 0
        return 1 if a == b else 2
    return level


_LEVEL_FUNCTIONS: dict[str, Callable[[Row, Row, bool], int]] = {
    "nhs_number": _nhs_level,
    "first_name": _first_name_level,
    "middle_names": _middle_names_level,
    "surname": _surname_level,
    "dob": _dob_level,
    "sex": _sex_level,
    "address": _address_level,
    "phone": _exact_level("phone"),
    "email": _exact_level("email"),
}


@functools.cache
def _expected_labels() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Each comparison's level labels as this version of linkage.model builds them."""
    settings = build_settings().create_settings_dict("duckdb")
    return tuple((c["output_column_name"],
                  tuple(str(level.get("label_for_charts")) for level in c["comparison_levels"]))
                 for c in settings["comparisons"])


# -- scoring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairScore:
    match_weight: float
    match_probability: float
    levels: dict[str, int]  # comparison -> level index (0 = null level)


@dataclass(frozen=True)
class _Comparison:
    name: str
    level_of: Callable[[Row, Row, bool], int]
    weights: tuple[float, ...]  # log2(m/u) per level; 0 for the null level
    tf_column: tuple[str | None, ...]  # per level: term-frequency column, if adjusted
    tf_log2_u: tuple[float, ...]  # per level: log2 of the exact-match u (for tf levels)
    tf_weight: tuple[float, ...]
    tf_minimum: tuple[float, ...]


class PairScorer:
    """A saved model's parameters, scoring feature-row pairs without Splink."""

    def __init__(self, model: LinkageModel) -> None:
        settings = model.settings
        labels = tuple(
            (c["output_column_name"],
             tuple(str(level.get("label_for_charts")) for level in c["comparison_levels"]))
            for c in settings["comparisons"])
        if labels != _expected_labels():
            raise ModelError("saved model's comparisons differ from this version's; retrain")
        prior = model.probability_two_random_records_match
        self.prior_weight = math.log2(prior / (1.0 - prior))
        self.model_version = model.model_version
        built: list[_Comparison] = []
        for comparison in settings["comparisons"]:
            levels = comparison["comparison_levels"]
            weights: list[float] = []
            tf_cols: list[str | None] = []
            tf_u: list[float] = []
            tf_w: list[float] = []
            tf_min: list[float] = []
            for level in levels:
                tf_min.append(float(level.get("tf_minimum_u_value") or 0.0))
                tf_w.append(float(level.get("tf_adjustment_weight", 1.0) or 0.0))
                if level.get("is_null_level"):
                    weights.append(0.0)
                    tf_cols.append(None)
                    tf_u.append(0.0)
                    continue
                m, u = float(level["m_probability"]), float(level["u_probability"])
                weights.append(math.log2(m / u))
                column = level.get("tf_adjustment_column")
                tf_cols.append(str(column) if column else None)
                tf_u.append(math.log2(u) if column else 0.0)
            built.append(_Comparison(
                comparison["output_column_name"],
                _LEVEL_FUNCTIONS[comparison["output_column_name"]],
                tuple(weights), tuple(tf_cols), tuple(tf_u), tuple(tf_w), tuple(tf_min)))
        self.comparisons = tuple(built)

    def score(self, left: Row, right: Row,
              term_frequency: Callable[[str, object], float | None]) -> PairScore:
        house = _same_house(left, right)
        weight = self.prior_weight
        levels: dict[str, int] = {}
        for comparison in self.comparisons:
            level = comparison.level_of(left, right, house)
            levels[comparison.name] = level
            weight += comparison.weights[level]
            column = comparison.tf_column[level]
            if column is not None:
                tfs = [tf for tf in (term_frequency(column, left[column]),
                                     term_frequency(column, right[column])) if tf is not None]
                if tfs and comparison.tf_weight[level]:
                    tf = max(*tfs, comparison.tf_minimum[level])
                    weight += comparison.tf_weight[level] * (comparison.tf_log2_u[level]
                                                             - math.log2(tf))
        return PairScore(weight, _probability(weight), levels)


def _probability(weight: float) -> float:
    if weight > 0:
        return 1.0 / (1.0 + math.pow(2.0, -weight))
    odds = math.pow(2.0, weight)
    return odds / (1.0 + odds)


_SCORERS: dict[str, PairScorer] = {}


def scorer_for(model: LinkageModel) -> PairScorer:
    """The (cached) pure-Python scorer of a model."""
    scorer = _SCORERS.get(model.model_version)
    if scorer is None:
        scorer = _SCORERS[model.model_version] = PairScorer(model)
    return scorer


def term_frequencies_from_features(con: duckdb.DuckDBPyConnection, table: str = "features"
                                   ) -> dict[str, dict[str, float]]:
    """Splink's term frequencies (count of a value / count of non-null values) of a table."""
    out: dict[str, dict[str, float]] = {}
    for column in _TF_COLUMNS:
        rows = con.execute(
            f'select {column}, count(*) / (select count({column}) from "{table}") '
            f'from "{table}" where {column} is not null group by {column}').fetchall()
        out[column] = {str(value): float(share) for value, share in rows}
    return out


# -- matching ------------------------------------------------------------------------------


@dataclass
class MatchOutcome:
    """Where a new record went, and why (ids and scores only)."""

    unique_id: str
    decision: Decision
    client_id: str
    best_candidate: str | None
    best_probability: float | None
    best_weight: float | None
    candidates: int  # candidate records scored
    review_pairs: int  # pairs written to linkage_pair (at or above the review threshold)
    too_little: bool  # the new record has too little to match on
    run_id: int  # this match's own linkage_run (kind "incremental")
    index_run_id: int  # the full run whose index the record was matched against
    timings_ms: dict[str, float] = field(default_factory=dict)


def match_new_record(
    session: Session,
    model: LinkageModel,
    keyring: Cipher,
    blind_index: BlindIndexer,
    patient_id: str,
    *,
    auto_link_threshold: float = DEFAULT_AUTO_LINK_THRESHOLD,
    review_threshold: float = DEFAULT_REVIEW_THRESHOLD,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    term_frequencies: TermFrequencies | None = None,
) -> MatchOutcome:
    """Match a stored source Patient that is not in the client index yet, and place it.

    Writes go into `session`'s transaction; the caller commits. Raises NoIndexError before
    the first full run, AlreadyIndexedError for a Patient already in the index, and
    LookupError for a Patient that is not stored (or deleted).
    """
    if not 0.0 <= review_threshold <= auto_link_threshold <= 1.0:
        raise ValueError("need 0 <= review threshold <= auto-link threshold <= 1")
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(stage: str, since: float) -> float:
        now = time.perf_counter()
        timings[stage] = round((now - since) * 1000, 3)
        return now

    scorer = scorer_for(model)
    run = session.execute(
        sa.select(LinkageRunRow.id, LinkageRunRow.counts)
        .where(LinkageRunRow.status == "completed", LinkageRunRow.kind == "full")
        .order_by(LinkageRunRow.id.desc()).limit(1)).first()
    if run is None:
        raise NoIndexError("no completed full linkage run: run `unified-record link` first")
    index_run_id = int(run[0])
    if session.get(ClientMemberRow, patient_id) is not None:
        raise AlreadyIndexedError("the Patient is already in the client index")
    repo = ResourceRepository(session, keyring, blind_index)
    row = session.get(ResourceRow, ("Patient", patient_id))
    body = repo.get("Patient", patient_id) if row is not None else None
    if row is None or body is None:
        raise LookupError("no current Patient with that id")
    new = patient_features(body, source_feed=row.source_feed, source_org=row.source_org,
                           source_record_id=row.source_record_id)
    little = too_little_to_match(new)
    t = lap("read", started)

    lock_index(session)
    run_id = start_run(session, model.model_version, kind="incremental")
    must, cannot = _constraints_of(session, patient_id)

    def done(outcome: MatchOutcome) -> MatchOutcome:
        finish_run(session, run_id, {"decision": outcome.decision,
                                     "candidates": outcome.candidates,
                                     "review_pairs": outcome.review_pairs})
        lap("write", t)
        outcome.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 3)
        return outcome

    # A steward's must-link decision places the record, whatever the scores.
    for partner in must:
        member = session.get(ClientMemberRow, partner)
        client_id = _active_client(session, member.client_id) if member is not None else None
        if client_id is not None:
            _add_member(session, patient_id, client_id, run_id, None, None,
                        model.model_version, f"incremental: steward decision links {partner}")
            session.flush()
            return done(MatchOutcome(patient_id, "joined", client_id, partner, None, None, 0, 0,
                                     little, run_id, index_run_id, timings))

    # A Patient retired by an A40 merge follows its survivor, as in a full run.
    survivor = new["replaced_by"] if new["active"] is False else None
    if isinstance(survivor, str):
        member = session.get(ClientMemberRow, survivor)
        client_id = _active_client(session, member.client_id) if member is not None else None
        if client_id in _clients_holding(session, cannot):
            client_id = None  # a steward kept them apart: that outranks the source's merge
        followed: Decision = "joined" if client_id is not None else "new"
        if client_id is None:  # survivor not indexed, or kept apart: alone, as in a full run
            client_id = _create_client(session, run_id)
        _add_member(session, patient_id, client_id, run_id, None, None, model.model_version,
                    f"incremental: follows its survivor {survivor}" if followed == "joined"
                    else "incremental: new client (survivor not in the index or kept apart)")
        session.flush()
        return done(MatchOutcome(patient_id, followed, client_id, survivor, None, None, 0, 0,
                                 little, run_id, index_run_id, timings))

    candidate_ids = _candidates(session, blind_index, body, patient_id, max_candidates)
    t = lap("candidates", t)

    rows = list(session.scalars(sa.select(ResourceRow).where(
        ResourceRow.resource_type == "Patient", ResourceRow.id.in_(candidate_ids),
        ResourceRow.deleted.is_(False)))) if candidate_ids else []
    members = {m.unique_id: m for m in session.scalars(
        sa.select(ClientMemberRow).where(ClientMemberRow.unique_id.in_(candidate_ids)))
    } if candidate_ids else {}
    features: list[dict[str, object]] = []
    for candidate in rows:
        if candidate.id not in members:
            continue  # not in the index (e.g. another new record not placed yet)
        cbody = repo.get("Patient", candidate.id)  # in the identity map: no query
        if cbody is None:
            continue
        cf = patient_features(cbody, source_feed=candidate.source_feed,
                              source_org=candidate.source_org,
                              source_record_id=candidate.source_record_id)
        if cf["active"] is not False:  # merged-away Patients are not scored
            features.append(cf)
    t = lap("features", t)

    tf = (_exact_tf(term_frequencies) if term_frequencies is not None
          else _blind_index_tf(session, blind_index, new, run[1]))
    t = lap("term_frequencies", t)
    scored: list[tuple[float, float, str, bool]] = []  # (probability, weight, id, linkable)
    for cf in features:
        left, right = (new, cf) if str(new["unique_id"]) < str(cf["unique_id"]) else (cf, new)
        result = scorer.score(left, right, tf)
        scored.append((result.match_probability, result.match_weight, str(cf["unique_id"]),
                       not little and not too_little_to_match(cf)))
    scored.sort(key=lambda s: (-s[1], s[2]))
    t = lap("scoring", t)

    best = scored[0] if scored else None
    barred = _clients_holding(session, cannot)
    linkable = [s for s in scored if s[3] and s[0] >= auto_link_threshold
                and _active_client(session, members[s[2]].client_id) not in barred]
    review = [s for s in scored if s[0] >= review_threshold and s[2] not in cannot]
    decision: Decision
    if linkable:
        decision = "joined"
        probability, weight, partner, _ = linkable[0]
        client_id = _active_client(session, members[partner].client_id) or \
            _create_client(session, run_id)
        _add_member(session, patient_id, client_id, run_id, probability, weight,
                    model.model_version, f"incremental: matched {partner}")
    else:
        decision = "review" if review else "new"
        client_id = _create_client(session, run_id)
        _add_member(session, patient_id, client_id, run_id, None, None, model.model_version,
                    "incremental: new client")
    if review:
        session.execute(sa.insert(LinkagePairRow), [
            {"unique_id_l": min(patient_id, other), "unique_id_r": max(patient_id, other),
             "run_id": run_id, "match_probability": p, "match_weight": w}
            for p, w, other, _ in review])
    session.flush()
    return done(MatchOutcome(
        unique_id=patient_id, decision=decision, client_id=client_id,
        best_candidate=best[2] if best else None,
        best_probability=best[0] if best else None, best_weight=best[1] if best else None,
        candidates=len(scored), review_pairs=len(review), too_little=little, run_id=run_id,
        index_run_id=index_run_id, timings_ms=timings))


def _constraints_of(session: Session, patient_id: str) -> tuple[list[str], set[str]]:
    """The records a steward said `patient_id` must (sorted) or must not be linked with."""
    must: list[str] = []
    cannot: set[str] = set()
    for left, right, must_link in session.execute(
            sa.select(LinkConstraintRow.unique_id_l, LinkConstraintRow.unique_id_r,
                      LinkConstraintRow.must_link)
            .where(sa.or_(LinkConstraintRow.unique_id_l == patient_id,
                          LinkConstraintRow.unique_id_r == patient_id))):
        other = right if left == patient_id else left
        if must_link:
            must.append(other)
        else:
            cannot.add(other)
    return sorted(must), cannot


def _clients_holding(session: Session, records: set[str]) -> set[str | None]:
    """The active clients that hold any of `records`."""
    if not records:
        return set()
    owners = session.scalars(sa.select(ClientMemberRow.client_id)
                             .where(ClientMemberRow.unique_id.in_(sorted(records))))
    return {_active_client(session, owner) for owner in owners} - {None}


def _candidates(session: Session, blind_index: BlindIndexer, body: dict[str, Any],
                patient_id: str, limit: int) -> list[str]:
    """Ids of Patients sharing a blocking key with `body`, NHS-number hits first."""
    values: dict[str, list[str]] = {}
    for param, value in index_values(body):
        if param == "identifier" and not value.startswith(NHS_NUMBER_SYSTEM + "|"):
            continue
        if param in ("identifier", "birthdate", "phonetic", "given", "postcode", "family",
                     "birthyear", "phone", "email"):
            values.setdefault(param, []).append(blind_index.digest(param, value))

    # The driving side is found by (param, value hash) alone, so that every database uses
    # ix_search_index_param_value_hash (SQLite preferred the resource_type index, a scan);
    # the resource type is checked on the result.
    si, other = SearchIndexRow, aliased(SearchIndexRow)

    def pairs(first: str, seconds: Sequence[str], rank: int) -> sa.Select[str, str, int] | None:
        present = [p for p in seconds if values.get(p)]
        if not values.get(first) or not present:
            return None
        condition = sa.or_(*[sa.and_(other.param == p, other.value_hash.in_(values[p]))
                             for p in present])
        return (sa.select(si.resource_type, si.resource_id, sa.literal(rank))
                .join(other, sa.and_(other.resource_type == si.resource_type,
                                     other.resource_id == si.resource_id))
                .where(si.param == first, si.value_hash.in_(values[first]), condition))

    parts: list[sa.Select[str, str, int]] = []
    if values.get("identifier"):
        parts.append(sa.select(si.resource_type, si.resource_id, sa.literal(0))
                     .where(si.param == "identifier", si.value_hash.in_(values["identifier"])))
    # Surname or phone with the birth year (`family`/`phone` joined to `birthyear`) are left
    # out: measured at 100,000 people they took the p95 from 5 ms to 56 ms (a common
    # surname drives a join over thousands of rows). A composite blind-index key would make
    # them one lookup each; until then the next full run finds those pairs.
    for first, seconds, rank in (("birthdate", ("phonetic", "given", "postcode"), 1),
                                 ("postcode", ("given",), 2)):
        if (select := pairs(first, seconds, rank)) is not None:
            parts.append(select)
    if values.get("email"):
        parts.append(sa.select(si.resource_type, si.resource_id, sa.literal(2))
                     .where(si.param == "email", si.value_hash.in_(values["email"])))
    if not parts:
        return []
    found: dict[str, int] = {}
    for resource_type, rid, rank in session.execute(sa.union_all(*parts)):
        if resource_type == "Patient" and rid != patient_id:
            found[rid] = min(int(rank), found.get(rid, int(rank)))
    return sorted(found, key=lambda rid: (found[rid], rid))[:limit]


def _exact_tf(frequencies: TermFrequencies) -> Callable[[str, object], float | None]:
    def tf(column: str, value: object) -> float | None:
        if value is None:
            return None
        return frequencies.get(column, {}).get(str(value))
    return tf


def _blind_index_tf(session: Session, blind_index: BlindIndexer, new: Row,
                    run_counts: str | None) -> Callable[[str, object], float | None]:
    """Term frequencies estimated from blind-index counts (see the module docstring).

    Only the new record's values are looked up: an exact agreement is on its value.
    """
    try:
        total = float(json.loads(run_counts or "{}").get("scored") or 0)
    except ValueError:
        total = 0.0
    total = max(total, 1.0)
    params = {"first_name": "given", "middle_names": "given", "surname": "family"}
    wanted: dict[tuple[str, str], str] = {}  # (param, hash) -> column
    for column, param in params.items():
        value = new.get(column)
        if isinstance(value, str) and (folded := fold_name(value)):
            wanted[(param, blind_index.digest(param, folded))] = column
    counts: dict[str, float] = {}
    if wanted:
        rows = session.execute(
            sa.select(SearchIndexRow.param, SearchIndexRow.value_hash, sa.func.count())
            .where(sa.or_(*[sa.and_(SearchIndexRow.param == param,
                                    SearchIndexRow.value_hash == value_hash)
                            for param, value_hash in wanted]))
            .group_by(SearchIndexRow.param, SearchIndexRow.value_hash))
        for param, value_hash, count in rows:
            counts[wanted[(param, value_hash)]] = float(count)

    def tf(column: str, value: object) -> float | None:
        if value is None or value != new.get(column):
            return None
        return max(counts.get(column, 1.0), 1.0) / total
    return tf


def _active_client(session: Session, client_id: str) -> str | None:
    """The active client an id stands for, following `replaced_by`; None if none."""
    seen: set[str] = set()
    current: str | None = client_id
    while current is not None and current not in seen:
        seen.add(current)
        client = session.get(ClientRow, current)
        if client is None:
            return None
        if client.status == "active":
            return client.id
        current = client.replaced_by
    return None


def _create_client(session: Session, run_id: int) -> str:
    client_id = new_client_id()
    while session.get(ClientRow, client_id) is not None:
        client_id = new_client_id()
    session.add(ClientRow(id=client_id, status="active", replaced_by=None,
                          created_run=run_id, updated_run=run_id))
    session.add(LinkHistoryRow(run_id=run_id, client_id=client_id, unique_id=None,
                               action="created", detail="incremental", at=datetime.now(UTC)))
    return client_id


def _add_member(session: Session, unique_id: str, client_id: str, run_id: int,
                probability: float | None, weight: float | None, model_version: str,
                detail: str) -> None:
    session.add(ClientMemberRow(unique_id=unique_id, client_id=client_id, run_id=run_id,
                                match_probability=probability, match_weight=weight,
                                model_version=model_version))
    session.add(LinkHistoryRow(run_id=run_id, client_id=client_id, unique_id=unique_id,
                               action="joined", detail=detail, at=datetime.now(UTC)))


class IndexMatcher:
    """Places Patients in the client index as they are stored: the ingest pipeline's
    `on_patients` hook (files, MLLP, the FHIR API).

    Each Patient not yet in the index is matched (`match_new_record`) and committed on its
    own. Before the first full run, or without a saved model, it does nothing: the first
    `unified-record link` indexes everyone. A Patient already in the index that changes is
    left where it is until the next full run re-scores it.
    """

    def __init__(self, sessions: Callable[[], Session], keyring: Cipher,
                 blind_index: BlindIndexer, model_path: Path, *,
                 auto_link_threshold: float = DEFAULT_AUTO_LINK_THRESHOLD,
                 review_threshold: float = DEFAULT_REVIEW_THRESHOLD) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._blind_index = blind_index
        self._model_path = model_path
        self._model: LinkageModel | None = None
        self._bands = (auto_link_threshold, review_threshold)

    def __call__(self, patient_ids: Sequence[str]) -> list[MatchOutcome]:
        if not self._model_path.exists():
            return []
        if self._model is None:
            self._model = load_model(self._model_path)
        outcomes: list[MatchOutcome] = []
        for patient_id in dict.fromkeys(patient_ids):
            with self._sessions() as session:
                if session.get(ClientMemberRow, patient_id) is not None:
                    continue
                try:
                    outcome = match_new_record(
                        session, self._model, self._keyring, self._blind_index, patient_id,
                        auto_link_threshold=self._bands[0], review_threshold=self._bands[1])
                except NoIndexError:
                    return outcomes
                except (LookupError, AlreadyIndexedError):
                    continue
                session.commit()
                outcomes.append(outcome)
        return outcomes
