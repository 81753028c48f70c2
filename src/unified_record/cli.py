"""The `unified-record` command line."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from unified_record import __version__
from unified_record.config import ConfigError, load_settings
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


@app.command()
def demo(
    people: int = typer.Option(2_000, "--people", "-n", help="Size of the demo population."),
    out: Path = typer.Option(Path("var/demo"), "--out", help="Where the demo writes its feeds."),
) -> None:
    """Run the whole demo on the embedded defaults."""
    summary = _generate(people, 42, out, None, None, quiet=False)
    _print_summary(summary)
    Console().print(f"Feeds and ground truth written to [bold]{out}[/bold] "
                    "(see synthetic_data/README.md for the layout).")
