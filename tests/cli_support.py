"""Running the command line in-process, as an operator would (see the `env` fixture)."""

from __future__ import annotations

from typer.testing import CliRunner

from unified_record.cli import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    """Exit code and everything printed."""
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output
