"""The `unified-record` command line."""

from __future__ import annotations

from pathlib import Path

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
from unified_record.config import ConfigError, Settings, load_settings
from unified_record.ingest.mapping import MAPPINGS_DIR, MappingFileError
from unified_record.ingest.pipeline import IngestStats, Pipeline, default_workers
from unified_record.synthetic import (
    GenerateError,
    ProfileError,
    Summary,
    check_request,
    generate_dataset,
    load_profile,
)

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # plain one-line usage errors, fit for logs and scripts
    pretty_exceptions_enable=False,
    help="Unified Record command line.",
)
console = Console(stderr=True)


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


def _pipeline(settings: Settings, workers: int = 1, mappings: Path | None = None) -> Pipeline:
    from unified_record.security import load_or_create_keys

    try:
        keyring, blind_index = load_or_create_keys(settings)
        return Pipeline(settings.database_url, keyring, blind_index, mappings or MAPPINGS_DIR,
                        workers=workers)
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
) -> None:
    """Ingest one feed (--feed NAME PATH) or every feed folder of a generated dataset (DIR)."""
    import time

    if not path.exists():
        fail(f"{path}: no such file or folder")
    settings = _settings()
    with _pipeline(settings, workers or default_workers(), mappings) as pipeline:
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

    with _pipeline(_settings(), mappings=mappings) as pipeline:
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


@app.command()
def demo(
    people: int = typer.Option(2_000, "--people", "-n", help="Size of the demo population."),
    out: Path = typer.Option(Path("var/demo"), "--out", help="Where the demo writes its feeds."),
) -> None:
    """Run the whole demo on the embedded defaults."""
    import time

    summary = _generate(people, 42, out, None, None, quiet=False)
    _print_summary(summary)
    Console().print(f"Feeds and ground truth written to [bold]{out}[/bold] "
                    "(see synthetic_data/README.md for the layout).")
    settings = _settings()
    with _pipeline(settings, default_workers()) as pipeline:
        start = time.perf_counter()
        with _rate_progress(False) as progress:
            task = progress.add_task("ingest", total=None)
            results = pipeline.ingest_dataset(
                out, lambda n: progress.advance(task, n),
                lambda name: progress.update(task, description=name))
        _print_ingest(results, time.perf_counter() - start)
    Console().print(f"Stored, encrypted, in [bold]{settings.database_url}[/bold].")
