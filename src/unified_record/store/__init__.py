"""The store: encrypted, versioned FHIR resources with provenance, and replayable raw messages.

Open it with `make_engine` + `migrate`, then work inside a `UnitOfWork`; everything personal
is encrypted by the `Cipher` given, and searchable values are keyed hashes.
"""

from unified_record.store.crypto import BlindIndexer, Cipher, body_aad, raw_aad
from unified_record.store.db import make_engine, make_session_factory, migrate
from unified_record.store.governance_models import (
    AuditCheckpointRow,
    AuditEntryRow,
    BreakGlassGrantRow,
    BreakGlassReviewRow,
    OptOutRow,
)
from unified_record.store.messages import MessageRepository
from unified_record.store.models import (
    MESSAGE_STATUSES,
    Base,
    InboundMessage,
    ResourceRow,
    ResourceVersionRow,
    SearchIndexRow,
)
from unified_record.store.oauth_clients import OAuthClient, OAuthClientRepository
from unified_record.store.oauth_models import OAuthClientRow, UsedJtiRow
from unified_record.store.resources import (
    CorruptStoreError,
    Provenance,
    ResourceRepository,
    SourceConflictError,
    VersionInfo,
)
from unified_record.store.rotation import rotate_keys
from unified_record.store.unit_of_work import UnitOfWork

__all__ = [
    "MESSAGE_STATUSES",
    "AuditCheckpointRow",
    "AuditEntryRow",
    "Base",
    "BlindIndexer",
    "BreakGlassGrantRow",
    "BreakGlassReviewRow",
    "Cipher",
    "CorruptStoreError",
    "InboundMessage",
    "MessageRepository",
    "OAuthClient",
    "OAuthClientRepository",
    "OAuthClientRow",
    "OptOutRow",
    "Provenance",
    "ResourceRepository",
    "ResourceRow",
    "ResourceVersionRow",
    "SearchIndexRow",
    "SourceConflictError",
    "UnitOfWork",
    "UsedJtiRow",
    "VersionInfo",
    "body_aad",
    "make_engine",
    "make_session_factory",
    "migrate",
    "raw_aad",
    "rotate_keys",
]
