"""`unified-record link` and `unified-record link evaluate` as an operator runs them."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from cli_support import run
from linkage_support import SAMPLE


def test_link_then_evaluate_on_the_sample(env: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = run("link", "evaluate", "--truth", str(SAMPLE / "truth.csv"))
    assert code == 2 and "run `unified-record link` first" in out

    code, out = run("ingest", str(SAMPLE), "--workers", "1", "--quiet")
    assert code == 0, out
    code, out = run("link")
    assert code == 0, out
    assert "active clients" in out and "auto-links" in out and "trained" in out
    assert (env / "var" / "linkage-model.json").exists()

    code, out = run("link", "evaluate", "--truth", str(SAMPLE / "truth.csv"), "--json")
    assert code == 0, out
    figures = json.loads(out)
    for band in ("auto_link", "with_review"):
        assert {"precision", "recall", "f1"} <= set(figures[band])
    assert figures["clusters"]["precision"] >= 0.98
    assert figures["with_review"]["recall"] >= 0.9

    code, out = run("link", "evaluate", "--truth", str(SAMPLE / "truth.csv"))
    assert code == 0, out
    assert "auto-link" in out and "with review" in out and "persons resolved" in out

    # The bands come from configuration.
    monkeypatch.setenv("UR_LINK_AUTO_THRESHOLD", "0.99")
    monkeypatch.setenv("UR_LINK_REVIEW_THRESHOLD", "0.6")
    code, out = run("link", "evaluate", "--truth", str(SAMPLE / "truth.csv"), "--json")
    assert code == 0, out
    bands = json.loads(out)
    assert (bands["auto_link"]["threshold"], bands["with_review"]["threshold"]) == (0.99, 0.6)

    # Explain the first auto-linked pair: JSON weights and a standalone chart.
    import sqlalchemy as sa

    from unified_record.store.models import ClientMemberRow

    engine = sa.create_engine(os.environ["UR_DATABASE_URL"])
    with engine.connect() as conn:
        members = conn.execute(sa.select(ClientMemberRow.client_id, ClientMemberRow.unique_id)
                               .order_by(ClientMemberRow.client_id,
                                         ClientMemberRow.unique_id)).all()
    engine.dispose()
    by_client: dict[str, list[str]] = {}
    for client_id, unique_id in members:
        by_client.setdefault(client_id, []).append(unique_id)
    a, b = next(ids[:2] for ids in by_client.values() if len(ids) > 1)
    chart = env / "why.html"
    code, out = run("link", "explain", a, b, "--html", str(chart))
    assert code == 0, out
    explained = json.loads(out.splitlines()[0])
    assert explained["match_weight"] > 0
    assert abs(explained["prior"]["match_weight"] + sum(
        c["match_weight"] for c in explained["comparisons"]) - explained["match_weight"]) < 1e-9
    assert "<svg" in chart.read_text()
    code, out = run("link", "explain", a, "no-such-id")
    assert code == 2 and "no stored Patient with id 'no-such-id'" in out

    # A re-run uses the saved model and changes nothing.
    code, out = run("link")
    assert code == 0, out
    assert "trained" not in out
    assert re.search(r"clients created\D+0 ", out) and re.search(r"records joined\D+0 ", out)


def test_link_evaluate_names_a_missing_truth_file(env: Path) -> None:
    code, out = run("link", "evaluate", "--truth", str(env / "nope.csv"))
    assert code == 2 and "nope.csv: no such file" in out


def test_review_queue_and_steward_decisions_from_the_cli(
        env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A strict auto-link band leaves the sample's weakest links (0.9995-0.99999) for review.
    monkeypatch.setenv("UR_LINK_AUTO_THRESHOLD", "0.99999")
    code, out = run("ingest", str(SAMPLE), "--workers", "1", "--quiet")
    assert code == 0, out
    assert run("link", "--quiet")[0] == 0

    code, out = run("link", "review", "--json", "--limit", "5")
    assert code == 0, out
    items = [json.loads(line) for line in out.splitlines()]
    assert items and items[0]["client_l"] != items[0]["client_r"]
    a, b = items[0]["unique_id_l"], items[0]["unique_id_r"]

    code, out = run("link", "decide", "link", a, b, "--by", "steward-7",
                    "--reason", "Same person per the GP")
    assert code == 0, out
    clients = dict(line.split(" -> ") for line in out.splitlines()[1:])
    assert clients[a] == clients[b]
    code, out = run("link", "review", "--json", "--limit", "1000")
    assert not any({i["unique_id_l"], i["unique_id_r"]} == {a, b}
                   for i in map(json.loads, out.splitlines()))

    code, out = run("link", "decisions", "--record", a)
    assert code == 0 and "steward-7" in out and "Same person per the GP" in out

    # The next full run keeps the decision.
    assert run("link", "--quiet")[0] == 0
    import sqlalchemy as sa

    from unified_record.store.models import ClientMemberRow

    engine = sa.create_engine(os.environ["UR_DATABASE_URL"])
    with engine.connect() as conn:
        after = dict(conn.execute(sa.select(ClientMemberRow.unique_id, ClientMemberRow.client_id)
                                  .where(ClientMemberRow.unique_id.in_([a, b]))).all())
    engine.dispose()
    assert after[a] == after[b] == clients[a]
    code, out = run("link", "decide", "unlink", a, "--by", "steward-7", "--reason", "")
    assert code == 2 and "needs a reason" in out
    code, out = run("link", "decide", "merge", a, b, "--by", "s", "--reason", "r")
    assert code == 2 and "unknown decision 'merge'" in out


def test_records_ingested_after_a_full_run_are_matched_on_ingest(env: Path) -> None:
    import sqlalchemy as sa

    from unified_record.store.models import ClientMemberRow, LinkageRunRow, ResourceRow

    late = "community_health"
    for feed in ("gp_fhir", "acute_adt", "council_adult_social_care",
                 "council_childrens_social_care"):
        code, out = run("ingest", "--feed", feed, str(SAMPLE / feed), "--workers", "1", "-q")
        assert code == 0, out
    assert run("link", "--quiet")[0] == 0

    engine = sa.create_engine(os.environ["UR_DATABASE_URL"])

    def state() -> tuple[set[str], set[str], int]:
        with engine.connect() as conn:
            patients = set(conn.scalars(sa.select(ResourceRow.id).where(
                ResourceRow.resource_type == "Patient", ResourceRow.source_feed == late)))
            indexed = set(conn.scalars(sa.select(ClientMemberRow.unique_id)))
            runs = conn.scalar(sa.select(sa.func.count()).select_from(LinkageRunRow).where(
                LinkageRunRow.kind == "incremental")) or 0
        return patients, indexed, runs

    code, out = run("ingest", "--feed", late, str(SAMPLE / late), "--workers", "1", "-q")
    assert code == 0, out
    patients, indexed, runs = state()
    assert patients and patients <= indexed, "every late Patient is in the index at once"
    assert runs == len(patients)
    with engine.connect() as conn:
        clients = dict(conn.execute(sa.select(ClientMemberRow.unique_id,
                                              ClientMemberRow.client_id)).all())
    shared = {clients[p] for p in patients} & {c for u, c in clients.items()
                                                 if u not in patients}
    assert len(shared) >= len(patients) // 2, "most late records joined an existing client"
    engine.dispose()
