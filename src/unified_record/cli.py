"""The `unified-record` command line."""

from __future__ import annotations

import typer

from unified_record import __version__
from unified_record.config import ConfigError, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Unified Record command line.")


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
