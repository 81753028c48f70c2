"""Initial schema: inbound messages, resources, resource versions, blind index.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SOURCE_RECORD_PRESENT = sa.text("source_record_id IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "inbound_message",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("feed", sa.String(100), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("message_control_id", sa.String(200), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("locator", sa.String(1000), nullable=True),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_inbound_message"),
        sa.UniqueConstraint("feed", "content_hash", name="uq_inbound_message_feed_content_hash"),
        sa.CheckConstraint(
            "status IN ('pending', 'accepted', 'rejected', 'quarantined')",
            name="ck_inbound_message_status",
        ),
    )
    op.create_index("ix_inbound_message_status", "inbound_message", ["status"])
    op.create_index(
        "ix_inbound_message_feed_control_id", "inbound_message", ["feed", "message_control_id"]
    )

    op.create_table(
        "resource",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("source_feed", sa.String(100), nullable=False),
        sa.Column("source_org", sa.String(50), nullable=True),
        sa.Column("source_record_id", sa.String(200), nullable=True),
        sa.Column("inbound_message_id", sa.String(32), nullable=True),
        sa.Column("security_labels", sa.String(500), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("resource_type", "id", name="pk_resource"),
        sa.ForeignKeyConstraint(
            ["inbound_message_id"],
            ["inbound_message.id"],
            name="fk_resource_inbound_message_id_inbound_message",
        ),
    )
    op.create_index(
        "uq_resource_source_record",
        "resource",
        ["resource_type", "source_feed", "source_record_id"],
        unique=True,
        sqlite_where=_SOURCE_RECORD_PRESENT,
        postgresql_where=_SOURCE_RECORD_PRESENT,
    )

    op.create_table(
        "resource_version",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("inbound_message_id", sa.String(32), nullable=True),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("resource_type", "id", "version_id", name="pk_resource_version"),
        sa.ForeignKeyConstraint(
            ["inbound_message_id"],
            ["inbound_message.id"],
            name="fk_resource_version_inbound_message_id_inbound_message",
        ),
    )
    op.create_index(
        "ix_resource_version_inbound_message_id", "resource_version", ["inbound_message_id"]
    )

    op.create_table(
        "search_index",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        sa.Column("value_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_search_index"),
    )
    op.create_index("ix_search_index_param_value_hash", "search_index", ["param", "value_hash"])
    op.create_index("ix_search_index_resource", "search_index", ["resource_type", "resource_id"])


def downgrade() -> None:
    op.drop_table("search_index")
    op.drop_table("resource_version")
    op.drop_table("resource")
    op.drop_table("inbound_message")
