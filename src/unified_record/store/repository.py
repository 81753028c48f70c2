"""The repository layer in one import: repositories, the unit of work, and key rotation."""

from unified_record.store.messages import MessageRepository
from unified_record.store.resources import (
    Provenance,
    ResourceRepository,
    SourceConflictError,
    VersionInfo,
)
from unified_record.store.rotation import rotate_keys
from unified_record.store.unit_of_work import UnitOfWork

__all__ = [
    "MessageRepository",
    "Provenance",
    "ResourceRepository",
    "SourceConflictError",
    "UnitOfWork",
    "VersionInfo",
    "rotate_keys",
]
