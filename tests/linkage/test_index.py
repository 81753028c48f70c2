"""The unified client index: stable ids, merges, splits, joins, crash safety, and a full run
on the committed sample (both databases)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from linkage_support import SAMPLE, sample_store
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from unified_record.linkage.evaluate import evaluate, read_truth
from unified_record.linkage.index import (
    assign_clients,
    cluster_records,
    current_clusters,
    run_full_linkage,
    start_run,
    too_little_to_match,
)
from unified_record.linkage.model import DEFAULT_AUTO_LINK_THRESHOLD, DEFAULT_REVIEW_THRESHOLD
from unified_record.store import ResourceRow, make_engine, migrate
from unified_record.store.models import (
    ClientRow,
    LinkagePairRow,
    LinkageRunRow,
    LinkHistoryRow,
)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    migrate(database_url)
    engine = make_engine(database_url)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


def apply(sessions: sessionmaker[Session], clusters: dict[str, str]) -> tuple[int, dict[str, str]]:
    """One committed run applying `clusters`; returns the run id and the resulting index."""
    with sessions() as session:
        run = start_run(session, "test")
        assign_clients(session, clusters, run, model_version="test")
        session.commit()
        return run, current_clusters(session)


def history(sessions: sessionmaker[Session], run: int) -> list[tuple[str, str, str | None]]:
    with sessions() as session:
        rows = session.execute(
            sa.select(LinkHistoryRow.action, LinkHistoryRow.client_id, LinkHistoryRow.unique_id)
            .where(LinkHistoryRow.run_id == run).order_by(LinkHistoryRow.id))
        return [(a, c, u) for a, c, u in rows]


def client(sessions: sessionmaker[Session], client_id: str) -> ClientRow:
    with sessions() as session:
        row = session.get(ClientRow, client_id)
        assert row is not None
        return row


def test_identical_runs_keep_ids_and_write_no_history(sessions: sessionmaker[Session]) -> None:
    clusters = {"a": "x", "b": "x", "c": "y", "d": "z"}
    first, index = apply(sessions, clusters)
    assert index["a"] == index["b"] != index["c"] != index["d"]
    assert all(cid.startswith("C") and len(cid) == 13 for cid in index.values())
    assert [a for a, _, _ in history(sessions, first)].count("created") == 3
    # Same clusters under other labels (cluster labels carry no meaning between runs).
    second, again = apply(sessions, {"a": "1", "b": "1", "c": "2", "d": "3"})
    assert again == index
    assert history(sessions, second) == []


def test_merge_keeps_the_oldest_id_and_retires_the_other(sessions: sessionmaker[Session]
                                                         ) -> None:
    _, index = apply(sessions, {"a": "x", "b": "x"})
    old = index["a"]
    _, index = apply(sessions, {"a": "x", "b": "x", "c": "y", "d": "y", "e": "y"})
    newer = index["c"]  # created in the second run: younger, though larger, than `old`
    run, merged = apply(sessions, {u: "m" for u in "abcde"})
    assert set(merged.values()) == {old}
    retired = client(sessions, newer)
    assert (retired.status, retired.replaced_by, retired.updated_run) == ("retired", old, run)
    assert client(sessions, old).status == "active"
    actions = history(sessions, run)
    assert ("merged", old, None) in actions and ("retired", newer, None) in actions
    assert {u for a, c, u in actions if a == "joined" and c == old} == {"c", "d", "e"}
    assert {u for a, c, u in actions if a == "left" and c == newer} == {"c", "d", "e"}


def test_merge_of_clients_of_one_run_keeps_the_smallest_id(sessions: sessionmaker[Session]
                                                           ) -> None:
    _, index = apply(sessions, {"a": "x", "b": "y", "c": "z"})
    _, merged = apply(sessions, {"a": "m", "b": "m", "c": "m"})
    assert set(merged.values()) == {min(index.values())}


def test_split_leaves_the_id_with_the_largest_part(sessions: sessionmaker[Session]) -> None:
    _, index = apply(sessions, {u: "x" for u in "abcde"})
    original = index["a"]
    run, split = apply(sessions, {"a": "p", "b": "q", "c": "q", "d": "q", "e": "r"})
    assert split["b"] == split["c"] == split["d"] == original
    assert len({split["a"], split["e"], original}) == 3
    actions = history(sessions, run)
    assert ("split", original, None) in actions
    assert ("created", split["a"], None) in actions and ("left", original, "a") in actions
    assert client(sessions, original).status == "active"


def test_split_in_equal_halves_is_deterministic(sessions: sessionmaker[Session]) -> None:
    _, index = apply(sessions, {u: "x" for u in "abcd"})
    _, split = apply(sessions, {"c": "p", "d": "p", "a": "q", "b": "q"})
    assert split["a"] == split["b"] == index["a"]  # tie: the part holding the smallest id
    assert split["c"] != index["a"]


def test_new_record_joins_its_cluster_and_a_stranger_gets_a_new_id(
        sessions: sessionmaker[Session]) -> None:
    _, index = apply(sessions, {"a": "x", "b": "x"})
    run, after = apply(sessions, {"a": "x", "b": "x", "n": "x", "s": "s"})
    assert after["n"] == index["a"]
    assert after["s"] not in index.values()
    assert sorted(history(sessions, run)) == sorted([
        ("joined", index["a"], "n"), ("created", after["s"], None), ("joined", after["s"], "s")])


def test_removed_records_leave_and_empty_clients_retire(sessions: sessionmaker[Session]) -> None:
    _, index = apply(sessions, {"a": "x", "b": "y"})
    run, after = apply(sessions, {"a": "x"})
    assert after == {"a": index["a"]}
    gone = client(sessions, index["b"])
    assert (gone.status, gone.replaced_by) == ("retired", None)
    assert ("left", index["b"], "b") in history(sessions, run)


def test_exception_before_commit_leaves_the_previous_index(sessions: sessionmaker[Session]
                                                          ) -> None:
    _, index = apply(sessions, {"a": "x", "b": "x", "c": "y"})
    with pytest.raises(RuntimeError), sessions() as session:
        run = start_run(session, "test")
        assign_clients(session, {"a": "1", "b": "2", "c": "1"}, run)
        raise RuntimeError("killed mid-run")
    with sessions() as session:
        assert current_clusters(session) == index
        assert session.scalar(sa.select(sa.func.count()).select_from(LinkageRunRow)) == 1
        statuses = set(session.scalars(sa.select(ClientRow.status)))
    assert statuses == {"active"}


def test_too_little_to_match() -> None:
    assert too_little_to_match({"surname": "smith"})  # name only
    assert too_little_to_match({"dob": "1970-01-01"})
    assert not too_little_to_match({"dob": "1970-01-01", "surname": "smith"})
    assert not too_little_to_match({"nhs_number": "9434765919"})


def test_clustering_holds_back_records_with_too_little_to_match_on() -> None:
    pairs = [("a", "b", 0.9999, 20.0), ("b", "c", 0.99995, 21.0), ("c", "d", 0.7, 1.0),
             ("e", "f", 0.9999, 15.0)]
    clusters, scores, links, review = cluster_records(
        "abcdefg", pairs, too_little={"e"})
    assert clusters["a"] == clusters["b"] == clusters["c"] == "a"
    assert clusters["d"] == "d" and clusters["e"] == "e" and clusters["f"] == "f"
    assert (links, review) == (2, 2)  # the held-back auto-link pair goes to review
    assert scores["b"] == (0.99995, 21.0) and scores["a"] == (0.9999, 20.0)
    assert "d" not in scores and "e" not in scores


def test_merged_away_records_join_their_survivor() -> None:
    clusters, _, _, _ = cluster_records(
        ["a", "b", "old", "older", "orphan"], [("a", "b", 1.0, 30.0)],
        replaced_by={"old": "b", "older": "old", "orphan": "missing"})
    assert clusters["old"] == clusters["older"] == clusters["a"] == "a"
    assert clusters["orphan"] == "orphan"


def test_a_stewards_cannot_link_outranks_a_source_merge() -> None:
    """A steward who unlinks a merged-away record from its survivor (cannot-link with every
    other member) is not overruled by the merge: the record stands alone, and a record
    merged into it still follows the chain to the survivor."""
    clusters, _, _, _ = cluster_records(
        ["a", "b", "old", "older"], [("a", "b", 1.0, 30.0)],
        replaced_by={"old": "b", "older": "old"},
        cannot_link=[("a", "old"), ("b", "old"), ("old", "older")])
    assert clusters["a"] == clusters["b"] == clusters["older"] == "a"
    assert clusters["old"] == "old"


# -- a full run on the committed sample -------------------------------------------------------


def test_full_run_on_the_sample(database_url: str, tmp_path: Path) -> None:
    model_path = tmp_path / "model.json"
    with sample_store(database_url) as pipeline:
        engine: Engine = pipeline.engine
        stages: list[str] = []
        report = run_full_linkage(engine, pipeline.keyring, pipeline.blind_index,
                                  model_path=model_path, progress=stages.append)
        assert report.model_trained and model_path.exists()
        assert "training model" in stages and stages[-1] == "updating the index"
        assert report.records == report.scored + report.inactive
        assert 0 < report.clients < report.records and report.links > 0
        assert report.changes.created == report.clients

        sessions = sessionmaker(engine)
        with sessions() as session:
            clusters = current_clusters(session)
            keys = {rid: (feed, str(rec)) for rid, feed, rec in session.execute(
                sa.select(ResourceRow.id, ResourceRow.source_feed, ResourceRow.source_record_id)
                .where(ResourceRow.resource_type == "Patient"))}
            pairs = [(a, b, p) for a, b, p in session.execute(sa.select(
                LinkagePairRow.unique_id_l, LinkagePairRow.unique_id_r,
                LinkagePairRow.match_probability))]
            run = session.get(LinkageRunRow, report.run_id)
            assert run is not None and run.status == "completed"
            assert json.loads(run.counts or "{}")["clients"] == report.clients
        assert set(clusters) == set(keys)
        result = evaluate(pairs, clusters, keys, read_truth(SAMPLE / "truth.csv"),
                          auto_link_threshold=DEFAULT_AUTO_LINK_THRESHOLD,
                          review_threshold=DEFAULT_REVIEW_THRESHOLD)
        assert result.clusters.precision >= 0.98, result.clusters
        assert result.clusters.recall >= 0.8, result.clusters
        assert result.with_review.recall >= 0.9, result.with_review

        # A second run with the saved model changes nothing.
        again = run_full_linkage(engine, pipeline.keyring, pipeline.blind_index,
                                 model_path=model_path)
        assert not again.model_trained and again.changes.unchanged
        with sessions() as session:
            assert current_clusters(session) == clusters


def test_a_failing_full_run_leaves_the_previous_index(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unified_record.linkage import index as index_module

    model_path = tmp_path / "model.json"
    with sample_store(database_url, feeds=("gp_fhir", "acute_adt")) as pipeline:
        engine: Engine = pipeline.engine
        first = run_full_linkage(engine, pipeline.keyring, pipeline.blind_index,
                                 model_path=model_path)
        sessions = sessionmaker(engine)
        with sessions() as session:
            before = current_clusters(session)
        assert len(set(before.values())) == first.clients < len(before)

        def singletons(ids: list[str], *_: object, **__: object) -> tuple[
                dict[str, str], dict[str, tuple[float | None, float | None]], int, int]:
            return {uid: uid for uid in ids}, {}, 0, 0

        def crash(*_: object, **__: object) -> None:
            raise RuntimeError("killed before the switch")

        monkeypatch.setattr(index_module, "cluster_records", singletons)
        monkeypatch.setattr(index_module, "finish_run", crash)
        with pytest.raises(RuntimeError):
            run_full_linkage(engine, pipeline.keyring, pipeline.blind_index,
                             model_path=model_path)
        with sessions() as session:
            assert current_clusters(session) == before
            runs = list(session.scalars(sa.select(LinkageRunRow.status)))
            assert runs == ["completed"]
            assert session.scalar(sa.select(sa.func.count()).select_from(LinkHistoryRow)) \
                == first.changes.history


KILLED_RUN = """
import sys, time
from unified_record.linkage import index
from unified_record.security import BlindIndex, KeyRing
from unified_record.store import make_engine

url, data_key, index_key, model_path = sys.argv[1:]

def singletons(ids, *_, **__):
    return {uid: uid for uid in ids}, {}, 0, 0

def hang(*_, **__):
    print("switching", flush=True)  # the new index is written, not yet committed
    time.sleep(600)

index.cluster_records = singletons
index.finish_run = hang
index.run_full_linkage(make_engine(url), KeyRing({"k1": bytes.fromhex(data_key)}, "k1"),
                       BlindIndex(bytes.fromhex(index_key)), model_path=model_path)
"""


def test_sigkill_during_the_switch_leaves_the_previous_index(database_url: str,
                                                             tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from linkage_support import MAPPINGS

    from unified_record.ingest import Pipeline
    from unified_record.security import BlindIndex, KeyRing

    data_key, index_key = os.urandom(32), os.urandom(32)
    keyring, blind_index = KeyRing({"k1": data_key}, "k1"), BlindIndex(index_key)
    model_path = tmp_path / "model.json"
    with Pipeline(database_url, keyring, blind_index, MAPPINGS, workers=1) as pipeline:
        pipeline.ingest_path("gp_fhir", SAMPLE / "gp_fhir")
        pipeline.ingest_path("acute_adt", SAMPLE / "acute_adt")
        engine: Engine = pipeline.engine
        first = run_full_linkage(engine, keyring, blind_index, model_path=model_path)
        sessions = sessionmaker(engine)
        with sessions() as session:
            before = current_clusters(session)

        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_RUN, database_url, data_key.hex(), index_key.hex(),
             str(model_path)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "switching"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)

        with sessions() as session:
            assert current_clusters(session) == before
            assert list(session.scalars(sa.select(LinkageRunRow.status))) == ["completed"]
        # The index is still usable: the next run completes and changes nothing.
        again = run_full_linkage(engine, keyring, blind_index, model_path=model_path)
        assert again.changes.unchanged and again.clients == first.clients


def test_concurrent_updates_wait_for_each_other(sessions: sessionmaker[Session]) -> None:
    """PostgreSQL: the index lock; SQLite: its single writer (within the busy timeout)."""
    import threading

    first = sessions()
    clusters = {"a": "x", "b": "x"}
    run = start_run(first, "test")
    assign_clients(first, clusters, run)  # holds the index lock until commit
    seen: dict[str, dict[str, str]] = {}

    def second() -> None:
        with sessions() as session:
            other = start_run(session, "test")
            assign_clients(session, clusters, other)
            session.commit()
            seen["index"] = current_clusters(session)

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(timeout=1.0)
    assert thread.is_alive()  # waiting for the first run's transaction
    first.commit()
    index = current_clusters(first)
    first.close()
    thread.join(timeout=30)
    assert seen["index"] == index  # the second run kept the first run's ids
