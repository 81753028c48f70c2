"""Each resource body written once: the current version's `resource_version` row no longer
repeats the body (and key id) that `resource` holds. Ingest was bound by database writes,
and every new resource wrote its encrypted body twice.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHECK = "ck_resource_version_body_key_id"  # a key id exactly when there is a body
_CURRENT = (
    "EXISTS (SELECT 1 FROM resource r WHERE r.resource_type = resource_version.resource_type "
    "AND r.id = resource_version.id AND r.version_id = resource_version.version_id)"
)


def _from_resource(column: str) -> str:
    return (
        f"(SELECT r.{column} FROM resource r WHERE r.resource_type = "
        "resource_version.resource_type AND r.id = resource_version.id "
        "AND r.version_id = resource_version.version_id)"
    )


def upgrade() -> None:
    with op.batch_alter_table("resource_version") as batch:
        batch.alter_column("body", existing_type=sa.LargeBinary(), nullable=True)
        batch.alter_column("key_id", existing_type=sa.String(64), nullable=True)
        batch.create_check_constraint(op.f(_CHECK), "(body IS NULL) = (key_id IS NULL)")
    op.execute(f"UPDATE resource_version SET body = NULL, key_id = NULL WHERE {_CURRENT}")


def downgrade() -> None:
    op.execute(
        f"UPDATE resource_version SET body = {_from_resource('body')}, "
        f"key_id = {_from_resource('key_id')} WHERE body IS NULL"
    )
    with op.batch_alter_table("resource_version") as batch:
        batch.drop_constraint(op.f(_CHECK), type_="check")
        batch.alter_column("key_id", existing_type=sa.String(64), nullable=False)
        batch.alter_column("body", existing_type=sa.LargeBinary(), nullable=False)
