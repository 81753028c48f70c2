"""Steward decisions and the must-link / cannot-link constraints they put on every run;
linkage runs get a kind (full, incremental, decision).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("linkage_run") as batch:
        batch.add_column(sa.Column("kind", sa.String(20), nullable=False, server_default="full"))
        batch.create_check_constraint(
            "kind", "kind IN ('full', 'incremental', 'decision')")
        batch.create_index("ix_linkage_run_kind_status", ["kind", "status"])

    op.create_table(
        "link_decision",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("unique_id_l", sa.String(64), nullable=False),
        sa.Column("unique_id_r", sa.String(64), nullable=True),
        sa.Column("client_id", sa.String(32), nullable=True),
        sa.Column("decided_by", sa.String(128), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_link_decision"),
        sa.CheckConstraint(
            "kind IN ('link', 'not_a_match', 'unlink')", name="ck_link_decision_kind"),
    )
    op.create_index("ix_link_decision_unique_id_l", "link_decision", ["unique_id_l"])
    op.create_index("ix_link_decision_unique_id_r", "link_decision", ["unique_id_r"])

    op.create_table(
        "link_constraint",
        sa.Column("unique_id_l", sa.String(64), nullable=False),
        sa.Column("unique_id_r", sa.String(64), nullable=False),
        sa.Column("must_link", sa.Boolean(), nullable=False),
        sa.Column("decision_id", sa.String(36), nullable=False),
        sa.PrimaryKeyConstraint("unique_id_l", "unique_id_r", name="pk_link_constraint"),
    )
    op.create_index("ix_link_constraint_unique_id_r", "link_constraint", ["unique_id_r"])


def downgrade() -> None:
    op.drop_table("link_constraint")
    op.drop_table("link_decision")
    with op.batch_alter_table("linkage_run") as batch:
        batch.drop_index("ix_linkage_run_kind_status")
        batch.drop_constraint(op.f("ck_linkage_run_kind"), type_="check")  # named already
        batch.drop_column("kind")
