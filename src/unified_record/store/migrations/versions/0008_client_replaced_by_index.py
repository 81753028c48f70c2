"""An index on client.replaced_by: every access decision asks whether another client was
merged into the one it concerns (an objection under a merged id still counts), and without
the index that was a scan of the whole client table (8.9 ms at 100,000 clients).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_client_replaced_by", "client", ["replaced_by"])


def downgrade() -> None:
    op.drop_index("ix_client_replaced_by", table_name="client")
