"""Accuracy of a linkage run against a ground-truth file.

Inputs: the scored pairs (`unique_id_l`, `unique_id_r`, `match_probability`), the cluster of
every record (`unique_id` -> cluster id) at the auto-link threshold, each record's source key
(`unique_id` -> (source, source_record_id)), and the truth in the generator's
`source,source_record_id,person_id` format.

Pairwise figures are given for two bands: **auto-link** (pairs at or above the auto-link
threshold) and **with review** (pairs at or above the review threshold — what a data steward
could confirm). Recall counts *every* true pair in the truth file, including pairs whose
records were never compared (no blocking rule produced them) or never reached linkage at all,
so it cannot be flattered by blocking. True-pair totals are counted from the truth's group
sizes (n records of one person make n(n-1)/2 pairs), never by listing the pairs.

Cluster figures compare the clusters with the true persons: exactly resolved persons, false
merges (clusters holding more than one person) and missed matches (persons split over more
than one cluster), plus pairwise precision and recall of the pairs the clusters imply.
Records a truth file does not know are left out of every figure; records the truth knows but
the run does not count as unlinked singletons.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ClusterScores",
    "Evaluation",
    "PairScores",
    "Truth",
    "evaluate",
    "read_truth",
]

SourceKey = tuple[str, str]


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def _ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator; 1.0 when nothing was asked (no pairs claimed or owed)."""
    return numerator / denominator if denominator else 1.0


def _f1(precision: float, recall: float) -> float:
    total = precision + recall
    return 2 * precision * recall / total if total else 0.0


@dataclass(frozen=True)
class Truth:
    """The true person of each source record."""

    person_of: dict[SourceKey, str]

    @property
    def records(self) -> int:
        return len(self.person_of)

    @property
    def persons(self) -> int:
        return len(set(self.person_of.values()))

    @property
    def true_pairs(self) -> int:
        return sum(_pairs(n) for n in Counter(self.person_of.values()).values())


def read_truth(path: Path | str) -> Truth:
    """Read a `source,source_record_id,person_id` CSV file."""
    person_of: dict[SourceKey, str] = {}
    with Path(path).open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"source", "source_record_id", "person_id"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: truth file lacks column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            key = (row["source"], row["source_record_id"])
            if key in person_of and person_of[key] != row["person_id"]:
                raise ValueError(f"{path}:{line}: record {key} given two persons")
            person_of[key] = row["person_id"]
    return Truth(person_of)


@dataclass(frozen=True)
class PairScores:
    """Pairwise accuracy of the pairs at or above `threshold`."""

    threshold: float
    precision: float
    recall: float
    f1: float
    predicted_pairs: int  # scored pairs at or above the threshold between known records
    true_positives: int
    false_positives: int
    false_negatives: int  # true pairs not predicted, including pairs never compared


@dataclass(frozen=True)
class ClusterScores:
    """How the clusters at the auto-link threshold compare with the true persons."""

    clusters: int  # clusters holding at least one known record (unlinked records count)
    persons: int
    exact: int  # clusters that hold exactly one person's records, all of them
    exact_rate: float  # exact / persons
    false_merges: int  # clusters holding records of more than one person
    records_in_false_merges: int
    missed: int  # persons whose records are split over more than one cluster
    precision: float  # of the pairs the clusters imply (every pair within a cluster)
    recall: float
    f1: float


@dataclass(frozen=True)
class Evaluation:
    auto_link: PairScores
    with_review: PairScores
    clusters: ClusterScores
    records: int  # records in the truth
    true_pairs: int
    records_not_in_truth: int  # scored records the truth does not know (left out)
    truth_records_not_linked: int  # truth records absent from the run (count as misses)

    def to_json(self) -> dict[str, Any]:
        return {
            "auto_link": asdict(self.auto_link),
            "with_review": asdict(self.with_review),
            "clusters": asdict(self.clusters),
            "records": self.records,
            "true_pairs": self.true_pairs,
            "records_not_in_truth": self.records_not_in_truth,
            "truth_records_not_linked": self.truth_records_not_linked,
        }


def evaluate(
    predictions: Iterable[tuple[str, str, float]],
    clusters: Mapping[str, str],
    keys: Mapping[str, SourceKey],
    truth: Truth,
    *,
    auto_link_threshold: float,
    review_threshold: float,
) -> Evaluation:
    """Score a run: `predictions` are (unique_id_l, unique_id_r, match_probability)."""
    if not 0.0 <= review_threshold <= auto_link_threshold <= 1.0:
        raise ValueError("need 0 <= review threshold <= auto-link threshold <= 1")
    person: dict[str, str] = {}
    unknown = 0
    for uid, key in keys.items():
        p = truth.person_of.get(key)
        if p is None:
            unknown += 1
        else:
            person[uid] = p
    true_pairs = truth.true_pairs

    best: dict[tuple[str, str], float] = {}  # each pair once, its highest probability
    for left, right, probability in predictions:
        if left == right or left not in person or right not in person:
            continue
        pair = (left, right) if left < right else (right, left)
        if probability > best.get(pair, -1.0):
            best[pair] = probability

    def band(threshold: float) -> PairScores:
        predicted = tp = 0
        for (left, right), probability in best.items():
            if probability >= threshold:
                predicted += 1
                tp += person[left] == person[right]
        precision, recall = _ratio(tp, predicted), _ratio(tp, true_pairs)
        return PairScores(threshold=threshold, precision=precision, recall=recall,
                          f1=_f1(precision, recall), predicted_pairs=predicted,
                          true_positives=tp, false_positives=predicted - tp,
                          false_negatives=true_pairs - tp)

    return Evaluation(
        auto_link=band(auto_link_threshold),
        with_review=band(review_threshold),
        clusters=_cluster_scores(clusters, person, keys, truth),
        records=truth.records,
        true_pairs=true_pairs,
        records_not_in_truth=unknown,
        truth_records_not_linked=truth.records - len(person),
    )


def _cluster_scores(clusters: Mapping[str, str], person: Mapping[str, str],
                    keys: Mapping[str, SourceKey], truth: Truth) -> ClusterScores:
    # Every truth record gets a cluster: its own if the run did not place it anywhere.
    cluster_of: dict[SourceKey, str] = {}
    for uid in person:
        cluster_of[keys[uid]] = clusters.get(uid, f"\x00unclustered:{uid}")
    for key in truth.person_of:
        cluster_of.setdefault(key, f"\x00absent:{key[0]}:{key[1]}")

    members: dict[str, Counter[str]] = defaultdict(Counter)  # cluster -> person -> records
    for key, cluster_id in cluster_of.items():
        members[cluster_id][truth.person_of[key]] += 1
    person_sizes = Counter(truth.person_of.values())
    spread: Counter[str] = Counter()  # person -> number of clusters holding them
    exact = false_merges = merged_records = 0
    cluster_pairs = correct_pairs = 0
    for counts in members.values():
        size = sum(counts.values())
        cluster_pairs += _pairs(size)
        correct_pairs += sum(_pairs(n) for n in counts.values())
        for p in counts:
            spread[p] += 1
        if len(counts) > 1:
            false_merges += 1
            merged_records += size
        else:
            (p, n), = counts.items()
            exact += n == person_sizes[p]
    persons = len(person_sizes)
    precision, recall = _ratio(correct_pairs, cluster_pairs), _ratio(correct_pairs,
                                                                     truth.true_pairs)
    return ClusterScores(
        clusters=len(members), persons=persons, exact=exact,
        exact_rate=_ratio(exact, persons), false_merges=false_merges,
        records_in_false_merges=merged_records,
        missed=sum(1 for n in spread.values() if n > 1),
        precision=precision, recall=recall, f1=_f1(precision, recall),
    )
