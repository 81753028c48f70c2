"""Who is calling: what a validated access token says, in a form every layer can use.

The API builds it; the enforcement point (scopes now, consent later) and the audit log
consume it. Plain data, no web framework.
"""

from __future__ import annotations

from dataclasses import dataclass

from unified_record.security.scopes import Interaction, ScopeSet

__all__ = ["Caller"]


@dataclass(frozen=True, slots=True)
class Caller:
    client_id: str  # the OAuth client (a partner system)
    sub: str  # the token's subject: the client itself for Backend Services, else a user
    organisation: str | None  # ODS (or council) code of the caller's organisation
    role: str | None
    scopes: ScopeSet
    issuer: str
    token_id: str | None = None  # the token's jti, for the audit log
    patient: str | None = None  # launch context for patient/ scopes, if the token has one
    purpose_of_use: str | None = None

    def permits(self, resource_type: str, interaction: Interaction) -> bool:
        """True if some scope allows this; ``patient/`` scopes only with a patient context.

        Access granted only through ``patient/`` scopes is limited to that patient's
        compartment; the enforcement point applies that limit to the results.
        """
        contexts = self.scopes.contexts_permitting(resource_type, interaction)
        return bool(contexts - {"patient"}) or ("patient" in contexts and bool(self.patient))
