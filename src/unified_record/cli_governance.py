"""Commands of information governance: consent, opt-outs, break-glass review and the audit
log (registered on the main app)."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `unified-record` app."""
