"""Unified client index: linkage runs, clients, members, link history, scored pairs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "linkage_run",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("counts", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_linkage_run"),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'failed')", name="ck_linkage_run_status"
        ),
    )

    op.create_table(
        "client",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("replaced_by", sa.String(32), nullable=True),
        sa.Column("created_run", sa.Integer(), nullable=False),
        sa.Column("updated_run", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_client"),
        sa.CheckConstraint("status IN ('active', 'retired')", name="ck_client_status"),
    )
    op.create_index("ix_client_status", "client", ["status"])

    op.create_table(
        "client_member",
        sa.Column("unique_id", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(32), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("match_probability", sa.Float(), nullable=True),
        sa.Column("match_weight", sa.Float(), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("unique_id", name="pk_client_member"),
    )
    op.create_index("ix_client_member_client_id", "client_member", ["client_id"])

    op.create_table(
        "link_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(32), nullable=False),
        sa.Column("unique_id", sa.String(64), nullable=True),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_link_history"),
        sa.CheckConstraint(
            "action IN ('created', 'joined', 'left', 'merged', 'split', 'retired')",
            name="ck_link_history_action",
        ),
    )
    op.create_index("ix_link_history_client_id", "link_history", ["client_id"])
    op.create_index("ix_link_history_run_id", "link_history", ["run_id"])

    op.create_table(
        "linkage_pair",
        sa.Column("unique_id_l", sa.String(64), nullable=False),
        sa.Column("unique_id_r", sa.String(64), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("match_probability", sa.Float(), nullable=False),
        sa.Column("match_weight", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("unique_id_l", "unique_id_r", name="pk_linkage_pair"),
    )


def downgrade() -> None:
    op.drop_table("linkage_pair")
    op.drop_table("link_history")
    op.drop_table("client_member")
    op.drop_table("client")
    op.drop_table("linkage_run")
