"""The `unified-record` command line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from unified_record import __version__
from unified_record.cli_api import register as register_api_commands
from unified_record.cli_governance import register as register_governance_commands
from unified_record.config import ConfigError, Settings, load_settings
from unified_record.ingest.mapping import MAPPINGS_DIR, MappingFileError
from unified_record.ingest.pipeline import (
    BULK_BATCH_SIZE,
    IngestStats,
    Pipeline,
    default_workers,
)
from unified_record.synthetic import (
    GenerateError,
    ProfileError,
    Summary,
    check_request,
    generate_dataset,
    load_profile,
)

if TYPE_CHECKING:
    from unified_record.linkage.evaluate import Evaluation, Truth

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # plain one-line usage errors, fit for logs and scripts
    pretty_exceptions_enable=False,
    help="Unified Record command line.",
)
console = Console(stderr=True)
register_api_commands(app)
register_governance_commands(app)


def fail(message: str) -> None:
    """Print a one-line error and exit non-zero (no traceback, no personal data)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@app.callback()
def main() -> None:
    """Validate configuration before any command runs."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        load_settings()
    except ConfigError as exc:
        fail(str(exc))


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def generate(
    people: int = typer.Option(20_000, "--people", "-n", help="Number of people."),
    seed: int = typer.Option(42, "--seed", help="Random seed: same seed, same bytes."),
    out: Path = typer.Option(Path("var/synthetic"), "--out", help="Output folder."),
    profile: Path | None = typer.Option(None, "--profile", help="Profile YAML file."),
    workers: int = typer.Option(0, "--workers", help="Processes (0 = one per core)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Generate a synthetic population, its partner feeds and the ground truth."""
    summary = _generate(people, seed, out, profile, workers or None, quiet)
    if not quiet:
        _print_summary(summary)


def _generate(people: int, seed: int, out: Path, profile_path: Path | None,
              workers: int | None, quiet: bool) -> Summary:
    try:
        profile = load_profile(profile_path)
        check_request(people, seed, out)
    except (ProfileError, GenerateError) as exc:
        fail(str(exc))
        raise  # unreachable: fail() exits
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("people"), TimeElapsedColumn(),
                        console=console, disable=quiet)
    with progress:
        task = progress.add_task("generating", total=people)
        try:
            return generate_dataset(
                people, seed, out, profile, workers=workers,
                on_people=lambda n: progress.advance(task, n),
                on_phase=lambda phase: progress.update(task, description=phase),
            )
        except GenerateError as exc:
            fail(str(exc))
            raise


def _print_summary(summary: Summary) -> None:
    table = Table(title=f"{summary.people:,} people (seed {summary.seed}) -> {summary.out}")
    table.add_column("feed")
    table.add_column("source person records", justify="right")
    table.add_column("files / messages", justify="right")
    for feed, count in summary.source_records.items():
        table.add_row(feed, f"{count:,}", f"{summary.files.get(feed, 0):,}")
    table.add_row("total", f"{sum(summary.source_records.values()):,}", "")
    Console().print(table)


keys_app = typer.Typer(no_args_is_help=True, help="Encryption keys.")
app.add_typer(keys_app, name="keys")


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail(str(exc))
        raise


def _pipeline(settings: Settings, workers: int = 1, mappings: Path | None = None, *,
              bulk_load: bool = False, match: bool = True,
              batch_size: int | None = None) -> Pipeline:
    """The ingest pipeline; with `match`, each new Patient is placed in the client index as
    it is stored (once a full linkage has run)."""
    from unified_record.linkage.incremental import IndexMatcher
    from unified_record.linkage.index import MODEL_FILE_NAME
    from unified_record.security import load_or_create_keys

    try:
        keyring, blind_index = load_or_create_keys(settings)
        pipeline = Pipeline(settings.database_url, keyring, blind_index,
                            mappings or MAPPINGS_DIR, workers=workers, bulk_load=bulk_load,
                            batch_size=batch_size)
        if match:
            pipeline.on_patients = IndexMatcher(
                pipeline.sessions, keyring, blind_index, settings.data_dir / MODEL_FILE_NAME,
                auto_link_threshold=settings.link_auto_threshold,
                review_threshold=settings.link_review_threshold)
        return pipeline
    except (ConfigError, MappingFileError) as exc:
        fail(str(exc))
        raise


class RateColumn(ProgressColumn):
    """Messages (source records) per second, the figure people watch during an ingest."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} records/s" if speed else "- records/s", style="cyan")


def _rate_progress(quiet: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                    MofNCompleteColumn(), TextColumn("messages"), RateColumn(),
                    TimeElapsedColumn(),
                    console=console, disable=quiet)


def _print_ingest(results: dict[str, IngestStats], seconds: float) -> None:
    table = Table(title="ingest")
    for column in ("feed", "messages", "accepted", "quarantined", "duplicates",
                   "with warnings", "resources"):
        table.add_column(column, justify="left" if column == "feed" else "right")
    total = IngestStats("total")
    for name, stats in results.items():
        total.add(stats)
        table.add_row(name, *(f"{v:,}" for v in (stats.messages, stats.accepted,
                                                 stats.quarantined, stats.duplicates,
                                                 stats.with_warnings, stats.resources)))
    table.add_row("total", *(f"{v:,}" for v in (total.messages, total.accepted,
                                                total.quarantined, total.duplicates,
                                                total.with_warnings, total.resources)))
    out = Console(width=120)
    out.print(table)
    if seconds > 0 and total.messages:
        out.print(f"{total.messages / seconds:,.0f} messages/s over {seconds:.1f} s")
    if total.quarantined:
        out.print(f"{total.quarantined:,} message(s) quarantined: see "
                        "`unified-record quarantine`; fix the mapping, then "
                        "`unified-record replay`.")


@app.command()
def ingest(
    path: Path = typer.Argument(..., help="A feed file or folder (with --feed), or a dataset."),
    feed: str | None = typer.Option(None, "--feed", help="Feed name (a mapping in mappings/)."),
    workers: int = typer.Option(0, "--workers", help="Mapping processes (0 = one per core)."),
    mappings: Path = typer.Option(MAPPINGS_DIR, "--mappings", help="Folder of mapping files."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    match: bool = typer.Option(True, "--match/--no-match", help="Place each new Patient in "
                               "the client index as it is stored (after the first `link`); "
                               "--no-match leaves them for the next full run."),
    batch_size: int = typer.Option(BULK_BATCH_SIZE, "--batch-size", min=1,
                                   help="Messages per transaction."),
) -> None:
    """Ingest one feed (--feed NAME PATH) or every feed folder of a generated dataset (DIR)."""
    import time

    if not path.exists():
        fail(f"{path}: no such file or folder")
    settings = _settings()
    with _pipeline(settings, workers or default_workers(), mappings,
                   bulk_load=True, match=match, batch_size=batch_size) as pipeline:
        try:
            if feed:
                pipeline.mapping(feed)
            else:
                pipeline.dataset_folders(path)
        except ValueError as exc:
            fail(str(exc))
        start = time.perf_counter()
        with _rate_progress(quiet) as progress:
            task = progress.add_task(feed or "ingest", total=None)
            try:
                if feed:
                    results = {feed: pipeline.ingest_path(
                        feed, path, lambda n: progress.advance(task, n))}
                else:
                    results = pipeline.ingest_dataset(
                        path, lambda n: progress.advance(task, n),
                        lambda name: progress.update(task, description=name))
            except (ValueError, FileNotFoundError) as exc:
                fail(str(exc))
                raise
        if not quiet:
            _print_ingest(results, time.perf_counter() - start)


@app.command()
def replay(
    feed: str | None = typer.Option(None, "--feed", help="Only this feed."),
    mappings: Path = typer.Option(MAPPINGS_DIR, "--mappings", help="Folder of mapping files."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Re-process quarantined messages from their stored raw bytes (after a mapping fix)."""
    import time

    with _pipeline(_settings(), mappings=mappings, bulk_load=True) as pipeline:
        start = time.perf_counter()
        with _rate_progress(quiet) as progress:
            task = progress.add_task("replay", total=None)
            results = pipeline.replay(feed, lambda n: progress.advance(task, n))
        if not quiet:
            _print_ingest(results, time.perf_counter() - start)


@app.command()
def quarantine(feed: str | None = typer.Option(None, "--feed", help="Only this feed.")) -> None:
    """List quarantined messages: feed, where in which file, and why (no personal data)."""
    with _pipeline(_settings()) as pipeline, pipeline.uow() as uow:
        count = 0
        for message in uow.messages.quarantined(feed):
            typer.echo(f"{message.feed}\t{message.locator or '-'}\t{message.reason}")
            count += 1
        typer.echo(f"{count} quarantined message(s)", err=True)


@app.command()
def mllp(
    port: int = typer.Option(2575, "--port", help="TCP port (0 picks a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    feed: str = typer.Option("acute_adt", "--feed", help="The feed mapping for these messages."),
    mappings: Path = typer.Option(MAPPINGS_DIR, "--mappings", help="Folder of mapping files."),
) -> None:
    """Listen for HL7 v2 over MLLP; store each message, then answer AA, AE or AR."""
    import asyncio

    from unified_record.ingest.listener import run_listener

    with _pipeline(_settings(), mappings=mappings) as pipeline:
        try:
            pipeline.mapping(feed)
        except ValueError as exc:
            fail(str(exc))

        def ready(bound: int) -> None:
            typer.echo(f"MLLP listener for {feed} on {host}:{bound} (Ctrl-C to stop)", err=True)

        try:
            asyncio.run(run_listener(pipeline, feed, host, port, ready))
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc.strerror}")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Make a new data key active and re-encrypt everything under it, batch by batch."""
    from unified_record.security import load_or_create_keys, rotate_key_file
    from unified_record.store import make_engine, migrate, rotate_keys
    from unified_record.store.db import make_session_factory

    settings = _settings()
    try:
        if settings.data_keys:
            keyring, _ = load_or_create_keys(settings)  # operator prepended a new UR_DATA_KEYS
        else:
            rotate_key_file(settings)
            keyring, _ = load_or_create_keys(settings)
    except ConfigError as exc:
        fail(str(exc))
        raise
    engine = make_engine(settings.database_url)
    migrate(engine)
    count = rotate_keys(make_session_factory(engine), keyring)
    typer.echo(f"active key {keyring.active_kid}; re-encrypted {count:,} value(s)")


link_app = typer.Typer(
    invoke_without_command=True,
    help="Record linkage: `link` runs a full linkage; `link evaluate` scores the index.",
)
app.add_typer(link_app, name="link")


@link_app.callback()
def link(
    ctx: typer.Context,
    model: Path | None = typer.Option(
        None, "--model", help="Saved model (default UR_DATA_DIR/linkage-model.json); "
        "trained and saved there if missing."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary."),
    backend: str = typer.Option("duckdb", "--backend", help="Where pairs are scored: duckdb "
                                "(in process) or spark (Splink's Spark backend)."),
    spark_master: str | None = typer.Option(None, "--spark-master", help="Spark master URL "
                                            "for --backend spark (default local mode)."),
    truth: Path | None = typer.Option(
        None, "--truth", help="Truth CSV (source,source_record_id,person_id): score the run "
        "against it and keep the figures with the run for the linkage quality page."),
) -> None:
    """Run a full linkage: score every stored Patient, cluster, update the client index."""
    if ctx.invoked_subcommand is not None:
        return
    if backend not in ("duckdb", "spark"):
        fail(f"unknown backend {backend!r}; use duckdb or spark")
    _run_linkage(_settings(), model, quiet, backend=backend, spark_master=spark_master,
                 truth=truth)


def _run_linkage(settings: Settings, model: Path | None, quiet: bool, *,
                 backend: str = "duckdb", spark_master: str | None = None,
                 truth: Path | None = None) -> None:
    """Full linkage with a progress display, then a summary table (unless quiet); with a
    truth file, the run's accuracy is scored, kept with the run and printed."""
    from rich.progress import SpinnerColumn

    from unified_record.linkage.index import MODEL_FILE_NAME, run_full_linkage
    from unified_record.linkage.model import ModelError
    from unified_record.security import load_or_create_keys
    from unified_record.store import make_engine, migrate

    known = _read_truth(truth) if truth is not None else None  # a bad file stops first
    try:
        keyring, blind_index = load_or_create_keys(settings)
    except ConfigError as exc:
        fail(str(exc))
        raise
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"),
                            TimeElapsedColumn(), console=console, disable=quiet)
        with progress:
            task = progress.add_task("linkage", total=None)
            try:
                report = run_full_linkage(
                    engine, keyring, blind_index,
                    model_path=model or settings.data_dir / MODEL_FILE_NAME,
                    progress=lambda stage: progress.update(task, description=stage),
                    auto_link_threshold=settings.link_auto_threshold,
                    review_threshold=settings.link_review_threshold,
                    backend=backend, spark_master=spark_master)
            except ModelError as exc:
                fail(f"linkage model: {exc}")
                raise
    finally:
        engine.dispose()
    result = (_evaluate_and_keep(settings, truth.name, known, report.run_id)
              if truth is not None and known is not None else None)
    if quiet:
        return
    table = Table(title=f"linkage run {report.run_id} (model {report.model_version}"
                        f"{', trained' if report.model_trained else ''})")
    table.add_column("")
    table.add_column("count", justify="right")
    changes = report.changes
    for label, value in (
        ("source records", report.records), ("scored (active)", report.scored),
        ("merged-away records", report.inactive),
        ("too little to match on", report.too_little), ("auto-links", report.links),
        ("review pairs", report.review_pairs), ("active clients", report.clients),
        ("clients created", changes.created), ("clients retired", changes.retired),
        ("clients merged", changes.merged), ("clients split", changes.split),
        ("records joined", changes.joined), ("records left", changes.left),
    ):
        table.add_row(label, f"{value:,}")
    Console(width=100).print(table)
    if result is not None and truth is not None:
        _print_evaluation(result, truth.name)


def _read_truth(truth: Path) -> Truth:
    from unified_record.linkage.evaluate import read_truth

    if not truth.is_file():
        fail(f"{truth}: no such file")
    try:
        return read_truth(truth)
    except (ValueError, KeyError, UnicodeDecodeError) as exc:
        fail(str(exc))
        raise


def _evaluate_and_keep(settings: Settings, truth_name: str, known: Truth,
                       run_id: int | None) -> Evaluation:
    """Score the index against the truth and keep the figures with run `run_id` (default:
    the last full run), for the linkage quality page."""
    from unified_record.linkage.accuracy import evaluate_index, last_full_run, record_evaluation
    from unified_record.store import make_engine, make_session_factory, migrate

    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        with make_session_factory(engine)() as session:
            result = evaluate_index(session, known,
                                    auto_link_threshold=settings.link_auto_threshold,
                                    review_threshold=settings.link_review_threshold)
            if result is None:
                fail("the client index is empty: run `unified-record link` first")
                raise AssertionError("unreachable")
            run = run_id if run_id is not None else last_full_run(session)
            if run is not None:
                record_evaluation(session, run, truth_name, result)
                session.commit()
    finally:
        engine.dispose()
    return result


def _print_evaluation(result: Evaluation, truth_name: str) -> None:
    table = Table(title=f"linkage against {truth_name} ({result.records:,} records, "
                        f"{result.true_pairs:,} true pairs)")
    for column in ("band", "precision", "recall", "F1", "predicted", "false +", "false -"):
        table.add_column(column, justify="left" if column == "band" else "right")
    for name, band in (("auto-link", result.auto_link), ("with review", result.with_review)):
        table.add_row(f"{name} (>= {band.threshold})", f"{band.precision:.4f}",
                      f"{band.recall:.4f}", f"{band.f1:.4f}", f"{band.predicted_pairs:,}",
                      f"{band.false_positives:,}", f"{band.false_negatives:,}")
    c = result.clusters
    table.add_row("clients", f"{c.precision:.4f}", f"{c.recall:.4f}", f"{c.f1:.4f}",
                  f"{c.clusters:,}", f"{c.false_merges:,} merges", f"{c.missed:,} missed")
    out = Console(width=120)
    out.print(table)
    out.print(f"{c.exact:,} of {c.persons:,} persons resolved exactly ({c.exact_rate:.1%})")


@link_app.command("explain")
def link_explain(
    id_a: str = typer.Argument(..., help="A source Patient id (as in the client index)."),
    id_b: str = typer.Argument(..., help="The other source Patient id."),
    html: Path | None = typer.Option(None, "--html", help="Also write the waterfall chart "
                                     "as a standalone HTML page here."),
    model: Path | None = typer.Option(None, "--model", help="Saved model (default "
                                      "UR_DATA_DIR/linkage-model.json)."),
) -> None:
    """Why two records match or not: per-comparison match weights as JSON (no values)."""
    import json

    from sqlalchemy.orm import Session

    from unified_record.linkage.explain import ExplainError, explain_pair, explanation_html
    from unified_record.linkage.index import MODEL_FILE_NAME
    from unified_record.linkage.model import ModelError, load_model
    from unified_record.security import load_or_create_keys
    from unified_record.store import make_engine, migrate

    settings = _settings()
    path = model or settings.data_dir / MODEL_FILE_NAME
    if not path.is_file():
        fail(f"{path}: no saved linkage model; run `unified-record link` first")
    engine = make_engine(settings.database_url)
    try:
        keyring, blind_index = load_or_create_keys(settings)
        migrate(engine)
        with Session(engine) as session:
            explanation = explain_pair(session, load_model(path), keyring, blind_index,
                                       id_a, id_b)
    except (ConfigError, ExplainError, ModelError) as exc:
        fail(str(exc))
        raise
    finally:
        engine.dispose()
    typer.echo(json.dumps(explanation.to_json(), sort_keys=True))
    if html is not None:
        html.write_text(explanation_html(explanation), encoding="utf-8")
        typer.echo(f"chart written to {html}", err=True)


@link_app.command("review")
def link_review(
    limit: int = typer.Option(20, "--limit", min=1, help="How many items to list."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines on standard output."),
) -> None:
    """The review queue: undecided possible matches across two clients, strongest first
    (record and client ids and scores only; `link explain A B` shows why)."""
    import json

    from sqlalchemy.orm import Session

    from unified_record.linkage.review import review_queue
    from unified_record.store import make_engine, migrate

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        with Session(engine) as session:
            items = review_queue(session, limit=limit)
    finally:
        engine.dispose()
    if as_json:
        for item in items:
            typer.echo(json.dumps(item.__dict__, sort_keys=True))
        return
    table = Table(title=f"review queue (first {limit})")
    for column in ("record A", "client A", "record B", "client B", "probability", "weight"):
        table.add_column(column, justify="right" if column in ("probability", "weight")
                         else "left")
    for item in items:
        table.add_row(item.unique_id_l, item.client_l, item.unique_id_r, item.client_r,
                      f"{item.match_probability:.6f}", f"{item.match_weight:.2f}")
    Console(width=140).print(table)
    if not items:
        typer.echo("nothing to review")


@link_app.command("decide")
def link_decide(
    kind: str = typer.Argument(..., help="link | not_a_match | unlink"),
    record: str = typer.Argument(..., help="A source Patient id in the client index."),
    other: str | None = typer.Argument(None, help="The other record (not for unlink)."),
    by: str = typer.Option(..., "--by", help="Who decides (the data steward's user id)."),
    reason: str = typer.Option(..., "--reason", help="Why (stored encrypted)."),
) -> None:
    """Record a data steward's decision and apply it to the index now; every later run,
    full or incremental, respects it."""
    from unified_record.linkage.review import DecisionError, decide
    from unified_record.security import load_or_create_keys
    from unified_record.store import make_engine, make_session_factory, migrate

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        keyring, blind_index = load_or_create_keys(settings)
        migrate(engine)
        with make_session_factory(engine)() as session:
            outcome = decide(session, keyring, blind_index, kind, record, other,  # type: ignore[arg-type]
                             decided_by=by, reason=reason,
                             auto_link_threshold=settings.link_auto_threshold)
            session.commit()
    except (ConfigError, DecisionError) as exc:
        fail(str(exc))
        raise
    finally:
        engine.dispose()
    changes = outcome.changes
    typer.echo(f"decision {outcome.decision_id} ({kind}) applied in run {outcome.run_id}: "
               f"{changes.created} client(s) created, {changes.retired} retired, "
               f"{changes.joined} record move(s)")
    for uid, client_id in sorted(outcome.clients.items()):
        typer.echo(f"{uid} -> {client_id}")


@link_app.command("decisions")
def link_decisions(
    record: str | None = typer.Option(None, "--record", help="Only decisions naming it."),
    limit: int = typer.Option(50, "--limit", min=1),
) -> None:
    """Stewards' decisions, newest first: who, when, what and why."""
    from sqlalchemy.orm import Session

    from unified_record.linkage.review import list_decisions
    from unified_record.security import load_or_create_keys
    from unified_record.store import make_engine, migrate

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        keyring, _ = load_or_create_keys(settings)
        migrate(engine)
        with Session(engine) as session:
            decisions = list_decisions(session, keyring, record=record, limit=limit)
    except ConfigError as exc:
        fail(str(exc))
        raise
    finally:
        engine.dispose()
    table = Table(title="steward decisions")
    for column in ("when", "who", "decision", "records", "client", "reason"):
        table.add_column(column)
    for d in decisions:
        table.add_row(d.decided_at.isoformat(timespec="seconds"), d.decided_by, d.kind,
                      " ".join(filter(None, (d.unique_id_l, d.unique_id_r))),
                      d.client_id or "", d.reason)
    Console(width=160).print(table)


@link_app.command("evaluate")
def link_evaluate(
    truth: Path = typer.Option(..., "--truth", help="Truth CSV: source,source_record_id,"
                               "person_id."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on standard output."),
) -> None:
    """Score the current client index (and the last run's scored pairs) against a truth file;
    the figures are kept with the last full run for the linkage quality page."""
    import json

    known = _read_truth(truth)
    result = _evaluate_and_keep(_settings(), truth.name, known, None)
    if as_json:
        typer.echo(json.dumps(result.to_json(), sort_keys=True))
        return
    _print_evaluation(result, truth.name)


@app.command()
def demo(
    people: int = typer.Option(2_000, "--people", "-n", help="Size of the demo population."),
    out: Path = typer.Option(Path("var/demo"), "--out", help="Where the demo writes its feeds."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="End by serving the API "
                               "(until Ctrl-C) with a demo partner system and a token."),
) -> None:
    """Run the whole demo on the embedded defaults."""
    import time

    summary = _generate(people, 42, out, None, None, quiet=False)
    _print_summary(summary)
    Console().print(f"Feeds and ground truth written to [bold]{out}[/bold] "
                    "(see synthetic_data/README.md for the layout).")
    settings = _settings()
    with _pipeline(settings, default_workers(), bulk_load=True) as pipeline:
        start = time.perf_counter()
        with _rate_progress(False) as progress:
            task = progress.add_task("ingest", total=None)
            results = pipeline.ingest_dataset(
                out, lambda n: progress.advance(task, n),
                lambda name: progress.update(task, description=name))
        _print_ingest(results, time.perf_counter() - start)
    Console().print(f"Stored, encrypted, in [bold]{settings.database_url}[/bold].")
    # Scored against the generator's ground truth, kept for the linkage quality page.
    _run_linkage(settings, None, quiet=False, truth=out / "truth.csv")
    from unified_record.cli_api import serve_demo

    serve_demo(settings, block=serve)
