"""The audit log: AuditEvents appended to a hash chain with signed checkpoints, and its
verification (see docs/governance.md)."""

from unified_record.audit.events import Agent, Entity, audit_event, break_glass_entity
from unified_record.audit.log import AuditLog, AuditRecord, AuditWriteError
from unified_record.audit.signing import AuditSigner, load_audit_signer, load_verify_keys
from unified_record.audit.verify import Problem, VerifyReport, verify_audit_log

__all__ = [
    "Agent",
    "AuditLog",
    "AuditRecord",
    "AuditSigner",
    "AuditWriteError",
    "Entity",
    "Problem",
    "VerifyReport",
    "audit_event",
    "break_glass_entity",
    "load_audit_signer",
    "load_verify_keys",
    "verify_audit_log",
]
