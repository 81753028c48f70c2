"""Why two source Patients do (or do not) match: the data behind Splink's waterfall chart.

`explain_pair` scores one pair of stored source Patients with the saved model and returns,
step by step, how the final match weight is built: the prior (starting weight), then one
row per comparison (and per term-frequency adjustment) with the level the pair fell into,
its Bayes factor and its match weight (log2 of the Bayes factor). The weights add up to the
final match weight.

Governance logs may keep an explanation, so it carries **no personal data**: only record
ids (opaque resource ids), comparison names, level labels and numbers — never the compared
values. Splink's own waterfall data is produced with its "hide details" switch, and the
values it would have shown are not copied over.

Term-frequency adjustments depend on how common a name is in the whole population, so the
pair is scored by a linker over every active stored source Patient, exactly as a full run
(`linkage.index.run_full_linkage`) scores it: the result equals the weight the run stored
for the pair. That reads every Patient (in memory only), like a full run's first stage.

`explanation_html` draws the same numbers as a standalone HTML page: an inline SVG waterfall
and an accessible table, with no script and nothing fetched from elsewhere.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import duckdb
import sqlalchemy as sa
from splink.internals.waterfall_chart import records_to_waterfall_data
from sqlalchemy.orm import Session

from unified_record.linkage.features import iter_patient_features, load_features, patient_features
from unified_record.linkage.model import LinkageModel, linker_for
from unified_record.store.crypto import BlindIndexer, Cipher
from unified_record.store.models import ResourceRow
from unified_record.store.resources import ResourceRepository

__all__ = [
    "ComparisonStep",
    "ExplainError",
    "Explanation",
    "explain_pair",
    "explanation_html",
]

EXPLANATION_FORMAT = "unified-record/linkage-explanation"

# Splink's waterfall data (untyped): records, settings object, hide details -> waterfall rows.
_waterfall_data = cast(
    Callable[[list[dict[str, Any]], Any, bool], list[dict[str, Any]]], records_to_waterfall_data)


class ExplainError(Exception):
    """A pair cannot be explained (unknown or deleted record, the same record twice)."""


@dataclass(frozen=True)
class ComparisonStep:
    """One step of the waterfall: a comparison's level, or its term-frequency adjustment."""

    comparison: str  # the comparison's output column name ("tf_<name>" for a TF step)
    label: str  # the level the pair fell into (Splink's label_for_charts)
    comparison_vector_value: int | None  # the level's gamma value (-1: a value missing)
    bayes_factor: float
    match_weight: float  # log2 of the Bayes factor: this step's contribution
    m_probability: float | None
    u_probability: float | None
    term_frequency_adjustment: bool = False

    @property
    def is_null(self) -> bool:
        return self.comparison_vector_value == -1


@dataclass(frozen=True)
class Explanation:
    """How the model scored one pair; ids, labels and numbers only (no personal data)."""

    id_a: str
    id_b: str
    model_version: str
    prior_probability: float  # probability two random records match
    prior_bayes_factor: float
    prior_weight: float  # log2 of the prior Bayes factor: the starting match weight
    steps: tuple[ComparisonStep, ...]
    match_weight: float
    match_probability: float
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def weight_sum(self) -> float:
        """The prior weight plus every step's weight (equals `match_weight`)."""
        return math.fsum([self.prior_weight, *(s.match_weight for s in self.steps)])

    def to_json(self) -> dict[str, Any]:
        return {
            "format": EXPLANATION_FORMAT,
            "id_a": self.id_a,
            "id_b": self.id_b,
            "model_version": self.model_version,
            "prior": {
                "probability_two_random_records_match": self.prior_probability,
                "bayes_factor": self.prior_bayes_factor,
                "match_weight": self.prior_weight,
            },
            "comparisons": [asdict(step) for step in self.steps],
            "match_weight": self.match_weight,
            "match_probability": self.match_probability,
            "notes": dict(self.notes),
        }


# -- scoring -----------------------------------------------------------------------------------


@dataclass
class _SessionStore:
    """A caller-owned session as a `PatientStore` (this module neither commits nor closes it)."""

    session: Session
    resources: ResourceRepository


def _stored_patient(session: Session, repo: ResourceRepository, uid: str) -> dict[str, object]:
    row = session.scalar(sa.select(ResourceRow).where(
        ResourceRow.resource_type == "Patient", ResourceRow.id == uid,
        ResourceRow.deleted.is_(False)))
    body = repo.get("Patient", uid) if row is not None else None
    if row is None or body is None:
        raise ExplainError(f"no stored Patient with id {uid!r}")
    return patient_features(body, source_feed=row.source_feed, source_org=row.source_org,
                            source_record_id=row.source_record_id)


def _population(session: Session, repo: ResourceRepository) -> Iterator[dict[str, object]]:
    yield from iter_patient_features(_SessionStore(session, repo))


def explain_pair(
    session: Session,
    model: LinkageModel,
    keyring: Cipher,
    blind_index: BlindIndexer,
    id_a: str,
    id_b: str,
) -> Explanation:
    """Explain the model's score for source Patients `id_a` and `id_b` (resource ids, as in
    `client_member.unique_id`).

    Reads (and decrypts) the stored Patients through `session` without writing; raises
    `ExplainError` for an unknown or deleted id, or the same id twice. The pair is scored
    with the smaller id on the left, as Splink's `predict` orders it.
    """
    if id_a == id_b:
        raise ExplainError("a record cannot be compared with itself")
    repo = ResourceRepository(session, keyring, blind_index)
    pair = {uid: _stored_patient(session, repo, uid) for uid in (id_a, id_b)}
    left, right = sorted(pair)

    con = duckdb.connect()  # in memory: the features are plaintext personal data
    try:
        load_features(con, _population(session, repo))
        # Term frequencies come from the active records, the table a full run scores.
        con.execute("create or replace table scored as "
                    "select * from features where active is not false")
        load_features(con, [pair[left]], "explain_left")
        load_features(con, [pair[right]], "explain_right")
        linker = linker_for(con, "scored", model)
        db_api = linker._db_api
        frame_l = db_api.register("explain_left", table_name="explain_left")
        frame_r = db_api.register("explain_right", table_name="explain_right")
        scored = linker.inference.score_pair(frame_l, frame_r)
        records = scored.as_record_list()
        if len(records) != 1:
            raise ExplainError("the pair could not be scored")
        waterfall = _waterfall_data(records, linker._settings_obj, True)
        prior_probability = float(linker._settings_obj._probability_two_random_records_match)
    finally:
        con.close()

    record = records[0]
    steps: list[ComparisonStep] = []
    prior_bf = prior_weight = math.nan
    for row in waterfall:
        name = str(row["column_name"])
        if name == "Prior":
            prior_bf = float(row["bayes_factor"])
            prior_weight = float(row["log2_bayes_factor"])
            continue
        if name == "Final score":
            continue
        tf = bool(row.get("term_frequency_adjustment"))
        label = str(row["label_for_charts"])
        if tf and not label.startswith("Term freq"):
            # Splink repeats the level's label and m/u on a TF row whose level has no TF
            # adjustment (its weight is 0); say so rather than repeat them.
            label = f"{label} (no term-frequency adjustment at this level)"
        steps.append(ComparisonStep(
            comparison=name,
            label=label,
            comparison_vector_value=_int_or_none(row.get("comparison_vector_value")),
            bayes_factor=float(row["bayes_factor"]),
            match_weight=float(row["log2_bayes_factor"]),
            m_probability=None if tf else _float_or_none(row.get("m_probability")),
            u_probability=None if tf else _float_or_none(row.get("u_probability")),
            term_frequency_adjustment=tf,
        ))
    return Explanation(
        id_a=id_a,
        id_b=id_b,
        model_version=model.model_version,
        prior_probability=prior_probability,
        prior_bayes_factor=prior_bf,
        prior_weight=prior_weight,
        steps=tuple(steps),
        match_weight=float(record["match_weight"]),
        match_probability=float(record["match_probability"]),
        notes={"scored_as": {"left": left, "right": right}},
    )


def _float_or_none(value: object) -> float | None:
    if value is None:
        return None
    number = float(cast(float, value))
    return None if math.isnan(number) else number


def _int_or_none(value: object) -> int | None:
    return None if value is None else int(cast(int, value))


# -- the chart -----------------------------------------------------------------------------------

_POSITIVE = "#1b7837"  # green: evidence for a match
_NEGATIVE = "#b2182b"  # red: evidence against
_TOTAL = "#2166ac"  # blue: the prior and the final score
_ROW = 26  # px per bar
_LABEL_WIDTH = 330
_CHART_WIDTH = 520
_VALUE_WIDTH = 90


def _fmt(value: float, digits: int = 3) -> str:
    return f"{value:+.{digits}f}" if math.isfinite(value) else str(value)


def explanation_html(expl: Explanation, *, title: str | None = None) -> str:
    """A standalone HTML page: the waterfall as inline SVG and the same numbers as a table.

    No script, no external resources; every piece of text is escaped.
    """
    e = html.escape
    heading = title or f"Match weight of records {expl.id_a} and {expl.id_b}"
    bars: list[tuple[str, float, float, str]] = []  # label, start, end, colour
    total = expl.prior_weight
    bars.append(("Prior (starting match weight)", 0.0, total, _TOTAL))
    for step in expl.steps:
        start, total = total, total + step.match_weight
        colour = _POSITIVE if step.match_weight >= 0 else _NEGATIVE
        bars.append((f"{step.comparison}: {step.label}", start, total, colour))
    bars.append(("Final match weight", 0.0, expl.match_weight, _TOTAL))

    points = [0.0] + [v for _, s, t, _ in bars for v in (s, t) if math.isfinite(v)]
    low, high = min(points), max(points)
    span = (high - low) or 1.0

    def x(value: float) -> float:
        return _LABEL_WIDTH + (value - low) / span * _CHART_WIDTH

    height = _ROW * (len(bars) + 1) + 10
    width = _LABEL_WIDTH + _CHART_WIDTH + _VALUE_WIDTH
    svg: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="chart-title" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f'<title id="chart-title">{e(heading)}</title>',
        f'<line x1="{x(0.0):.1f}" y1="0" x2="{x(0.0):.1f}" y2="{height - _ROW:.0f}" '
        'stroke="#555" stroke-dasharray="3,3"/>',
    ]
    for i, (label, start, end, colour) in enumerate(bars):
        y = 5 + i * _ROW
        left, right = sorted((x(start), x(end)))
        svg.append(f'<text x="{_LABEL_WIDTH - 6}" y="{y + 16}" text-anchor="end" '
                   f'font-size="12">{e(label)}</text>')
        svg.append(f'<rect x="{left:.1f}" y="{y + 3}" width="{max(right - left, 1.0):.1f}" '
                   f'height="{_ROW - 8}" fill="{colour}"/>')
        change = end - start
        svg.append(f'<text x="{_LABEL_WIDTH + _CHART_WIDTH + 6}" y="{y + 16}" '
                   f'font-size="12">{e(_fmt(change if i not in (0, len(bars) - 1) else end))}'
                   '</text>')
        if 0 < i < len(bars) - 1:  # the running total: a tick at the end of each step
            svg.append(f'<line x1="{x(end):.1f}" y1="{y + 1}" x2="{x(end):.1f}" '
                       f'y2="{y + _ROW - 3}" stroke="#000"/>')
    axis_y = 5 + len(bars) * _ROW
    for value in (low, 0.0, high):
        svg.append(f'<text x="{x(value):.1f}" y="{axis_y + 12}" text-anchor="middle" '
                   f'font-size="11">{e(f"{value:.1f}")}</text>')
    svg.append("</svg>")

    rows = [
        "<tr><th scope=\"row\">Prior</th><td>Starting match weight</td><td></td>"
        f"<td>{e(f'{expl.prior_bayes_factor:.6g}')}</td><td>{e(_fmt(expl.prior_weight))}</td>"
        f"<td>{e(_fmt(expl.prior_weight))}</td></tr>"
    ]
    running = expl.prior_weight
    for step in expl.steps:
        running += step.match_weight
        kind = "term-frequency adjustment" if step.term_frequency_adjustment else (
            "value missing" if step.is_null else "")
        rows.append(
            f"<tr><th scope=\"row\">{e(step.comparison)}</th><td>{e(step.label)}</td>"
            f"<td>{e(kind)}</td><td>{e(f'{step.bayes_factor:.6g}')}</td>"
            f"<td>{e(_fmt(step.match_weight))}</td><td>{e(_fmt(running))}</td></tr>")
    rows.append(
        "<tr><th scope=\"row\">Final</th><td>Final match weight</td><td></td>"
        f"<td>{e(f'{2 ** expl.match_weight:.6g}')}</td><td></td>"
        f"<td>{e(_fmt(expl.match_weight))}</td></tr>")

    summary = (f"Final match weight {_fmt(expl.match_weight)}, match probability "
               f"{expl.match_probability:.6f} (model {expl.model_version}).")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{e(heading)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        "td:nth-child(4),td:nth-child(5),td:nth-child(6){text-align:right}"
        f".pos{{color:{_POSITIVE}}}.neg{{color:{_NEGATIVE}}}</style>",
        "</head>",
        "<body>",
        f"<h1>{e(heading)}</h1>",
        f"<p>{e(summary)}</p>",
        '<p>Bars: <span class="pos">green</span> adds evidence for a match, '
        '<span class="neg">red</span> evidence against; blue bars are the prior and the '
        "final weight. Compared values are not shown.</p>",
        "<figure>",
        *svg,
        "<figcaption>Waterfall of match weights (log2 Bayes factors)</figcaption>",
        "</figure>",
        "<table>",
        "<caption>Match weight, step by step</caption>",
        "<thead><tr><th scope=\"col\">Comparison</th><th scope=\"col\">Level</th>"
        "<th scope=\"col\">Note</th><th scope=\"col\">Bayes factor</th>"
        "<th scope=\"col\">Match weight</th><th scope=\"col\">Running total</th></tr></thead>",
        "<tbody>",
        *rows,
        "</tbody>",
        "</table>",
        "</body>",
        "</html>",
        "",
    ])
