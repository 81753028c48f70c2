"""Evaluation figures on a hand-made truth, worked out by hand below."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unified_record.linkage.evaluate import Truth, evaluate, read_truth

# Truth: 8 source records of 4 persons.
#   P1: a/1, a/2, b/1   -> 3 true pairs
#   P2: b/2, c/1        -> 1 true pair
#   P3: c/2             -> 0
#   P4: d/1, d/2        -> 1 true pair; d/2 never reached linkage (no unique id)
# True pairs: 5.
TRUTH_CSV = """source,source_record_id,person_id
a,1,P1
a,2,P1
b,1,P1
b,2,P2
c,1,P2
c,2,P3
d,1,P4
d,2,P4
"""
KEYS = {
    "u1": ("a", "1"), "u2": ("a", "2"), "u3": ("b", "1"), "u4": ("b", "2"),
    "u5": ("c", "1"), "u6": ("c", "2"), "u7": ("d", "1"),
    "u9": ("x", "9"),  # not in the truth: left out of every figure
}
PREDICTIONS = [
    ("u1", "u2", 0.9995),  # P1-P1 auto            TP
    ("u2", "u1", 0.3),  # the same pair again, lower: its best score counts
    ("u1", "u3", 0.7),  # P1-P1 review only      TP with review
    ("u4", "u5", 0.9999),  # P2-P2 auto            TP
    ("u3", "u4", 0.9991),  # P1-P2 auto            FP
    ("u5", "u6", 0.6),  # P2-P3 review only      FP with review
    ("u6", "u9", 0.99999),  # unknown record: ignored
    ("u2", "u3", 0.2),  # P1-P1 below review: a miss
]
# Connected components of the auto-link edges (u1-u2, u4-u5, u3-u4):
CLUSTERS = {"u1": "c1", "u2": "c1", "u3": "c2", "u4": "c2", "u5": "c2", "u6": "c3",
            "u7": "c4", "u9": "c5"}


@pytest.fixture
def truth(tmp_path: Path) -> Truth:
    path = tmp_path / "truth.csv"
    path.write_text(TRUTH_CSV, encoding="utf-8")
    return read_truth(path)


def test_truth_counts(truth: Truth) -> None:
    assert (truth.records, truth.persons, truth.true_pairs) == (8, 4, 5)


def test_pairwise_figures_by_hand(truth: Truth) -> None:
    result = evaluate(PREDICTIONS, CLUSTERS, KEYS, truth, auto_link_threshold=0.999,
                      review_threshold=0.5)
    auto = result.auto_link
    # auto: u1u2 (TP), u4u5 (TP), u3u4 (FP) -> precision 2/3, recall 2/5,
    # F1 = 2 * 2/3 * 2/5 / (2/3 + 2/5) = (8/15) / (16/15) = 1/2
    assert (auto.predicted_pairs, auto.true_positives, auto.false_positives,
            auto.false_negatives) == (3, 2, 1, 3)
    assert auto.precision == pytest.approx(2 / 3)
    assert auto.recall == pytest.approx(2 / 5)
    assert auto.f1 == pytest.approx(0.5)
    review = result.with_review
    # with review: the auto pairs + u1u3 (TP) + u5u6 (FP) -> 3/5 and 3/5; the misses are
    # u2u3 (scored 0.2) and d/1-d/2 (d/2 never linked), counted although never predicted
    assert (review.predicted_pairs, review.true_positives, review.false_positives,
            review.false_negatives) == (5, 3, 2, 2)
    assert review.precision == pytest.approx(3 / 5)
    assert review.recall == pytest.approx(3 / 5)
    assert review.f1 == pytest.approx(3 / 5)
    assert (result.records, result.true_pairs) == (8, 5)
    assert (result.records_not_in_truth, result.truth_records_not_linked) == (1, 1)


def test_cluster_figures_by_hand(truth: Truth) -> None:
    c = evaluate(PREDICTIONS, CLUSTERS, KEYS, truth, auto_link_threshold=0.999,
                 review_threshold=0.5).clusters
    # Clusters over truth records: c1 {P1 x2}, c2 {P1, P2 x2}, c3 {P3}, c4 {P4 (d/1)} and
    # d/2 alone (never linked).
    assert (c.clusters, c.persons) == (5, 4)
    assert c.exact == 1  # only c3 holds one person's records, all of them
    assert c.exact_rate == pytest.approx(1 / 4)
    assert (c.false_merges, c.records_in_false_merges) == (1, 3)  # c2
    assert c.missed == 2  # P1 over c1 and c2; P4 over c4 and its lone d/2
    # Pairs implied by clusters: c1 1 + c2 3 = 4; right: c1 1 + c2 (P2) 1 = 2.
    assert c.precision == pytest.approx(2 / 4)
    assert c.recall == pytest.approx(2 / 5)
    assert c.f1 == pytest.approx(2 * 0.5 * 0.4 / 0.9)


def test_json_shape(truth: Truth) -> None:
    data = evaluate(PREDICTIONS, CLUSTERS, KEYS, truth, auto_link_threshold=0.999,
                    review_threshold=0.5).to_json()
    data = json.loads(json.dumps(data))  # plain JSON
    for band in ("auto_link", "with_review"):
        assert {"precision", "recall", "f1"} <= set(data[band])
    assert {"false_merges", "missed", "exact", "precision", "recall"} <= set(data["clusters"])


def test_perfect_run_and_nothing_predicted(truth: Truth) -> None:
    keys = {f"k{i}": key for i, key in enumerate(truth.person_of)}
    person = {uid: truth.person_of[key] for uid, key in keys.items()}
    uids = sorted(keys)
    perfect = [(a, b, 1.0) for i, a in enumerate(uids) for b in uids[i + 1:]
               if person[a] == person[b]]
    result = evaluate(perfect, person, keys, truth, auto_link_threshold=0.99,
                      review_threshold=0.5)
    assert (result.auto_link.precision, result.auto_link.recall) == (1.0, 1.0)
    assert (result.clusters.exact, result.clusters.false_merges, result.clusters.missed) == (
        4, 0, 0)
    empty = evaluate([], {}, keys, truth, auto_link_threshold=0.99, review_threshold=0.5)
    assert empty.auto_link.precision == 1.0  # nothing claimed, nothing wrong
    assert empty.auto_link.recall == 0.0
    assert empty.clusters.clusters == 8 and empty.clusters.missed == 3


def test_true_pairs_counted_from_group_sizes() -> None:
    big = Truth({("gp", str(i)): "P" if i < 200_000 else f"Q{i}" for i in range(200_010)})
    assert big.true_pairs == 200_000 * 199_999 // 2


def test_bad_input(tmp_path: Path, truth: Truth) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("source,person_id\na,P1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="source_record_id"):
        read_truth(path)
    path.write_text("source,source_record_id,person_id\na,1,P1\na,1,P2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=":3"):
        read_truth(path)
    with pytest.raises(ValueError, match="threshold"):
        evaluate([], {}, {}, truth, auto_link_threshold=0.5, review_threshold=0.9)
