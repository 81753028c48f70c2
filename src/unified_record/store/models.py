"""Tables of the store: raw inbound messages, current resources, their versions, and the
blind index. Personal data lives only in encrypted columns; everything else is either
provenance (codes, ids, times) or keyed hashes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "CLIENT_STATUSES",
    "DECISION_KINDS",
    "LINK_ACTIONS",
    "MESSAGE_STATUSES",
    "RUN_KINDS",
    "Base",
    "ClientMemberRow",
    "ClientRow",
    "InboundMessage",
    "LinkConstraintRow",
    "LinkDecisionRow",
    "LinkHistoryRow",
    "LinkageEvaluationRow",
    "LinkagePairRow",
    "LinkageRunRow",
    "ResourceRow",
    "ResourceVersionRow",
    "SearchIndexRow",
    "UTCDateTime",
]

MESSAGE_STATUSES = ("pending", "accepted", "rejected", "quarantined")
CLIENT_STATUSES = ("active", "retired")
LINK_ACTIONS = ("created", "joined", "left", "merged", "split", "retired")
RUN_KINDS = ("full", "incremental", "decision")
DECISION_KINDS = ("link", "not_a_match", "unlink")

# Deterministic constraint names, so migrations can refer to them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset otherwise)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; the store keeps only timezone-aware times")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def table_of(model: type[Base]) -> sa.Table:
    """A model's table, typed as a Table (SQLAlchemy types `__table__` as a FromClause)."""
    table = model.__table__
    assert isinstance(table, sa.Table)
    return table


class InboundMessage(Base):
    """A message exactly as a feed sent it (encrypted), kept so it can be replayed."""

    __tablename__ = "inbound_message"
    __table_args__ = (
        sa.UniqueConstraint("feed", "content_hash", name="uq_inbound_message_feed_content_hash"),
        sa.Index("ix_inbound_message_status", "status"),
        sa.Index("ix_inbound_message_feed_control_id", "feed", "message_control_id"),
        sa.CheckConstraint(
            "status IN ('pending', 'accepted', 'rejected', 'quarantined')", name="status"
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    feed: Mapped[str] = mapped_column(sa.String(100))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    content_hash: Mapped[str] = mapped_column(sa.String(64))
    message_control_id: Mapped[str | None] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(20))
    reason: Mapped[str | None] = mapped_column(sa.Text())
    locator: Mapped[str | None] = mapped_column(sa.String(1000))
    key_id: Mapped[str] = mapped_column(sa.String(64))
    raw: Mapped[bytes] = mapped_column(sa.LargeBinary())
    attempts: Mapped[int] = mapped_column(sa.Integer())


class ResourceRow(Base):
    """The current version of a FHIR resource, with its provenance. Its body is the only
    copy of the current version's body (see ResourceVersionRow)."""

    __tablename__ = "resource"
    __table_args__ = (
        sa.Index(
            "uq_resource_source_record",
            "resource_type",
            "source_feed",
            "source_record_id",
            unique=True,
            sqlite_where=sa.text("source_record_id IS NOT NULL"),
            postgresql_where=sa.text("source_record_id IS NOT NULL"),
        ),
    )

    resource_type: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(sa.Integer())
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted: Mapped[bool] = mapped_column(sa.Boolean())
    source_feed: Mapped[str] = mapped_column(sa.String(100))
    source_org: Mapped[str | None] = mapped_column(sa.String(50))
    source_record_id: Mapped[str | None] = mapped_column(sa.String(200))
    inbound_message_id: Mapped[str | None] = mapped_column(
        sa.String(32), sa.ForeignKey("inbound_message.id")
    )
    security_labels: Mapped[str] = mapped_column(sa.String(500))
    key_id: Mapped[str] = mapped_column(sa.String(64))
    body: Mapped[bytes] = mapped_column(sa.LargeBinary())


class ResourceVersionRow(Base):
    """Every version ever written, the current one included, for vread and history.

    A body is written once: the current version's row has no body (NULL) and reads it from
    `resource`; when a newer version replaces it, that write moves the old body here, in the
    same transaction. `key_id` is the key of `body`, so it is NULL exactly when body is.
    """

    __tablename__ = "resource_version"
    __table_args__ = (
        sa.Index("ix_resource_version_inbound_message_id", "inbound_message_id"),
        sa.CheckConstraint("(body IS NULL) = (key_id IS NULL)", name="body_key_id"),
    )

    resource_type: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True)
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted: Mapped[bool] = mapped_column(sa.Boolean())
    inbound_message_id: Mapped[str | None] = mapped_column(
        sa.String(32), sa.ForeignKey("inbound_message.id")
    )
    key_id: Mapped[str | None] = mapped_column(sa.String(64))
    body: Mapped[bytes | None] = mapped_column(sa.LargeBinary())


class SearchIndexRow(Base):
    """A keyed hash of one searchable value: exact-match search without plaintext."""

    __tablename__ = "search_index"
    __table_args__ = (
        sa.Index("ix_search_index_param_value_hash", "param", "value_hash"),
        sa.Index("ix_search_index_resource", "resource_type", "resource_id"),
    )

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(sa.String(64))
    resource_id: Mapped[str] = mapped_column(sa.String(64))
    param: Mapped[str] = mapped_column(sa.String(64))
    value_hash: Mapped[str] = mapped_column(sa.String(64))


# -- unified client index (linkage) ----------------------------------------------------------
# Ids, scores and times only: no personal data is kept in any of these tables.


class LinkageRunRow(Base):
    """One change to the index: a full run, an incremental match, or a steward's decision;
    when, with which model, how it ended, and its counts (JSON)."""

    __tablename__ = "linkage_run"
    __table_args__ = (
        sa.CheckConstraint("status IN ('running', 'completed', 'failed')", name="status"),
        sa.CheckConstraint("kind IN ('full', 'incremental', 'decision')", name="kind"),
        sa.Index("ix_linkage_run_kind_status", "kind", "status"),
    )

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(sa.String(20), server_default="full", default="full")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    model_version: Mapped[str | None] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(20))
    counts: Mapped[str | None] = mapped_column(sa.Text())


class LinkageEvaluationRow(Base):
    """A run's accuracy against a ground-truth file (`linkage.evaluate.Evaluation` as JSON):
    aggregate figures and the truth file's name only, never an identifier from it."""

    __tablename__ = "linkage_evaluation"

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(sa.Integer(), sa.ForeignKey("linkage_run.id"),
                                        index=True)
    truth_file: Mapped[str] = mapped_column(sa.String(255))
    evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    figures: Mapped[str] = mapped_column(sa.Text())


class ClientRow(Base):
    """A unified client id. Retired ids stay, pointing at their successor (`replaced_by`)."""

    __tablename__ = "client"
    __table_args__ = (
        sa.CheckConstraint("status IN ('active', 'retired')", name="status"),
        sa.Index("ix_client_status", "status"),
        sa.Index("ix_client_replaced_by", "replaced_by"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    status: Mapped[str] = mapped_column(sa.String(20))
    replaced_by: Mapped[str | None] = mapped_column(sa.String(32))
    created_run: Mapped[int] = mapped_column(sa.Integer())
    updated_run: Mapped[int] = mapped_column(sa.Integer())


class ClientMemberRow(Base):
    """The client a source Patient (by resource id) belongs to, and the link that put it there."""

    __tablename__ = "client_member"
    __table_args__ = (sa.Index("ix_client_member_client_id", "client_id"),)

    unique_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(sa.String(32))
    run_id: Mapped[int] = mapped_column(sa.Integer())
    match_probability: Mapped[float | None] = mapped_column(sa.Float())
    match_weight: Mapped[float | None] = mapped_column(sa.Float())
    model_version: Mapped[str | None] = mapped_column(sa.String(64))


class LinkHistoryRow(Base):
    """One change to the index: which run, which client, which record, what and why."""

    __tablename__ = "link_history"
    __table_args__ = (
        sa.CheckConstraint(
            "action IN ('created', 'joined', 'left', 'merged', 'split', 'retired')",
            name="action",
        ),
        sa.Index("ix_link_history_client_id", "client_id"),
        sa.Index("ix_link_history_run_id", "run_id"),
    )

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(sa.Integer())
    client_id: Mapped[str] = mapped_column(sa.String(32))
    unique_id: Mapped[str | None] = mapped_column(sa.String(64))
    action: Mapped[str] = mapped_column(sa.String(20))
    detail: Mapped[str | None] = mapped_column(sa.Text())
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class LinkagePairRow(Base):
    """A scored pair of the latest full run at or above the review threshold (for review and
    evaluation); replaced as a whole by each run."""

    __tablename__ = "linkage_pair"

    unique_id_l: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    unique_id_r: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.Integer())
    match_probability: Mapped[float] = mapped_column(sa.Float())
    match_weight: Mapped[float] = mapped_column(sa.Float())


class LinkDecisionRow(Base):
    """A data steward's decision: link two records, not a match, or unlink a record from a
    client; who, when and why (the reason is free text, so it is encrypted)."""

    __tablename__ = "link_decision"
    __table_args__ = (
        sa.CheckConstraint("kind IN ('link', 'not_a_match', 'unlink')", name="kind"),
        sa.Index("ix_link_decision_unique_id_l", "unique_id_l"),
        sa.Index("ix_link_decision_unique_id_r", "unique_id_r"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(20))
    unique_id_l: Mapped[str] = mapped_column(sa.String(64))
    unique_id_r: Mapped[str | None] = mapped_column(sa.String(64))
    client_id: Mapped[str | None] = mapped_column(sa.String(32))
    decided_by: Mapped[str] = mapped_column(sa.String(128))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[bytes] = mapped_column(sa.LargeBinary())
    key_id: Mapped[str] = mapped_column(sa.String(64))
    run_id: Mapped[int] = mapped_column(sa.Integer())


class LinkConstraintRow(Base):
    """A pair every run must keep together (must_link) or apart; the latest decision on a
    pair replaces any earlier one. unique_id_l < unique_id_r."""

    __tablename__ = "link_constraint"
    __table_args__ = (sa.Index("ix_link_constraint_unique_id_r", "unique_id_r"),)

    unique_id_l: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    unique_id_r: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    must_link: Mapped[bool] = mapped_column(sa.Boolean())
    decision_id: Mapped[str] = mapped_column(sa.String(36))
