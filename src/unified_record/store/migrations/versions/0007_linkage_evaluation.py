"""A linkage run's accuracy against a ground-truth file: aggregate figures only.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "linkage_evaluation",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("truth_file", sa.String(255), nullable=False),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("figures", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_linkage_evaluation"),
        sa.ForeignKeyConstraint(["run_id"], ["linkage_run.id"],
                                name="fk_linkage_evaluation_run_id_linkage_run"),
    )
    op.create_index("ix_linkage_evaluation_run_id", "linkage_evaluation", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_linkage_evaluation_run_id", table_name="linkage_evaluation")
    op.drop_table("linkage_evaluation")
