"""Explaining a pair: the waterfall data adds up, equals the full run's score, carries no
personal data, and draws as standalone HTML (both databases)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from linkage_support import SAMPLE, sample_store
from sqlalchemy.orm import Session

from unified_record.linkage.explain import (
    ComparisonStep,
    ExplainError,
    Explanation,
    explain_pair,
    explanation_html,
)
from unified_record.linkage.index import run_full_linkage
from unified_record.linkage.model import load_model
from unified_record.store import ResourceRow
from unified_record.store.models import LinkagePairRow
from unified_record.store.resources import ResourceRepository


def _truth() -> dict[tuple[str, str], str]:
    with (SAMPLE / "truth.csv").open(encoding="utf-8", newline="") as fh:
        return {(r["source"], r["source_record_id"]): r["person_id"] for r in csv.DictReader(fh)}


def _personal_values(body: dict[str, Any]) -> set[str]:
    """Names, NHS number, postcode and date of birth of a Patient, as stored and folded."""
    values: set[str] = set()
    for name in body.get("name") or []:
        for part in [name.get("family"), *(name.get("given") or [])]:
            if isinstance(part, str):
                values.update(w for w in part.replace("-", " ").split() if len(w) >= 3)
    for ident in body.get("identifier") or []:
        if "nhs-number" in str(ident.get("system")):
            values.add(str(ident.get("value")))
    for address in body.get("address") or []:
        if address.get("postalCode"):
            values.add(str(address["postalCode"]))
            values.add(str(address["postalCode"]).replace(" ", ""))
    if body.get("birthDate"):
        values.add(str(body["birthDate"]))
    return values


class _Checker(HTMLParser):
    VOID: ClassVar[set[str]] = {"meta", "br", "img", "hr", "link", "input", "line", "rect", "path"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: set[str] = set()
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
            return
        self.stack.pop()


def _check_html(page: str) -> None:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert not checker.errors, checker.errors
    assert checker.stack == [], checker.stack
    assert {"html", "head", "title", "body", "svg", "table", "caption", "th"} <= checker.tags
    assert "<script" not in page.lower()
    without_xmlns = page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http" not in without_xmlns


def test_explain_pairs_on_the_sample(database_url: str, tmp_path: Path) -> None:
    model_path = tmp_path / "model.json"
    truth = _truth()
    with sample_store(database_url) as pipeline:
        engine = pipeline.engine
        run_full_linkage(engine, pipeline.keyring, pipeline.blind_index, model_path=model_path)
        model = load_model(model_path)
        with Session(engine) as session:
            ids = {(feed, str(rec)): rid for rid, feed, rec in session.execute(
                sa.select(ResourceRow.id, ResourceRow.source_feed, ResourceRow.source_record_id)
                .where(ResourceRow.resource_type == "Patient",
                       ResourceRow.deleted.is_(False)))}
            stored = {(a, b): w for a, b, w in session.execute(sa.select(
                LinkagePairRow.unique_id_l, LinkagePairRow.unique_id_r,
                LinkagePairRow.match_weight))}
            person = {rid: truth[key] for key, rid in ids.items() if key in truth}
            feed_of = {rid: feed for (feed, _), rid in ids.items()}

            # A true pair from different sources that the full run scored, and a non-match.
            by_person: dict[str, list[str]] = defaultdict(list)
            for rid in sorted(person):
                by_person[person[rid]].append(rid)
            true_pair = next(
                (a, b) for (a, b) in sorted(stored)
                if a in person and b in person and person[a] == person[b]
                and feed_of[a] != feed_of[b])
            members = sorted(person)
            non_pair = next(
                (a, b) for a in members for b in members
                if a < b and person[a] != person[b] and feed_of[a] != feed_of[b])

            # Given in reverse order: the explanation keeps the caller's order of ids.
            match = explain_pair(session, model, pipeline.keyring, pipeline.blind_index,
                                 true_pair[1], true_pair[0])
            other = explain_pair(session, model, pipeline.keyring, pipeline.blind_index,
                                 *non_pair)

            for expl in (match, other):
                assert abs(expl.weight_sum - expl.match_weight) <= 1e-9
                data = expl.to_json()
                total = data["prior"]["match_weight"] + sum(
                    c["match_weight"] for c in data["comparisons"])
                assert abs(total - data["match_weight"]) <= 1e-9
                assert data["model_version"] == model.model_version
                assert 0.0 <= data["match_probability"] <= 1.0
                assert {c["comparison"] for c in data["comparisons"]} >= {
                    "nhs_number", "first_name", "surname", "dob", "address"}
                assert all(set(c) >= {"label", "bayes_factor", "match_weight"}
                           for c in data["comparisons"])

            assert match.id_a == true_pair[1] and match.id_b == true_pair[0]
            assert match.match_weight > 0 and other.match_weight < 0
            # The same score as the full run's prediction for this pair.
            assert abs(match.match_weight - stored[true_pair]) <= 1e-6
            if non_pair in stored:
                assert abs(other.match_weight - stored[non_pair]) <= 1e-6

            # No personal data of either record in the JSON.
            repo = ResourceRepository(session, pipeline.keyring, pipeline.blind_index)
            for expl, pair in ((match, true_pair), (other, non_pair)):
                text = json.dumps(expl.to_json()).lower()
                for rid in pair:
                    body = repo.get("Patient", rid)
                    assert body is not None
                    values = _personal_values(body)
                    assert values
                    leaked = sorted(v for v in values if v.lower() in text)
                    assert not leaked, "personal data in the explanation"

            page = explanation_html(match)
            _check_html(page)
            assert match.id_a in page

            with pytest.raises(ExplainError, match="no stored Patient with id 'nope'"):
                explain_pair(session, model, pipeline.keyring, pipeline.blind_index,
                             true_pair[0], "nope")
            with pytest.raises(ExplainError):
                explain_pair(session, model, pipeline.keyring, pipeline.blind_index,
                             true_pair[0], true_pair[0])
            assert not session.new and not session.dirty  # read only


def test_html_escapes_every_text() -> None:
    expl = Explanation(
        id_a="<a>", id_b="b&b", model_version='1."x"', prior_probability=1e-4,
        prior_bayes_factor=1e-4 / (1 - 1e-4), prior_weight=-13.3,
        steps=(ComparisonStep("first_name", "<script>alert(1)</script>", 1, 8.0, 3.0, 0.8, 0.1),
               ComparisonStep("dob", "Else & other", 0, 0.25, -2.0, 0.1, 0.4),
               ComparisonStep("email", "Null", -1, 1.0, 0.0, None, None)),
        match_weight=-12.3, match_probability=2 ** -12.3 / (1 + 2 ** -12.3))
    page = explanation_html(expl)
    _check_html(page)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "b&amp;b" in page and "&lt;a&gt;" in page
    assert page.count("<tr>") == 1 + 1 + 3 + 1  # header, prior, steps, final
    assert abs(expl.weight_sum - expl.match_weight) <= 1e-9
