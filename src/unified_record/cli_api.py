"""Commands of the API side: OAuth clients and the server (registered on the main app)."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `unified-record` app."""
