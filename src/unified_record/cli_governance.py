"""Commands of information governance: consent, opt-outs, break-glass review, the policy and
the audit log (registered on the main app).

Operators act under their own name (``--by``), and every change is audited. Output holds
ids, codes and the governance officer's own notes; errors name the problem, never personal
data.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import typer

from unified_record.config import ConfigError, Settings, load_settings

__all__ = ["register"]

consent_app = typer.Typer(no_args_is_help=True, help="A person's consents and objections.")
optout_app = typer.Typer(no_args_is_help=True, help="The National Data Opt-out flag.")
breakglass_app = typer.Typer(no_args_is_help=True, help="Break-glass grants and their review.")
policy_app = typer.Typer(no_args_is_help=True, help="The consent policy (consent/*.yaml).")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `unified-record` app."""
    app.add_typer(consent_app, name="consent")
    app.add_typer(optout_app, name="optout")
    app.add_typer(breakglass_app, name="breakglass")
    app.add_typer(policy_app, name="policy")
    app.add_typer(audit_app, name="audit")


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        _fail(str(exc))


@dataclass
class _Governance:
    settings: Settings
    point: Any  # EnforcementPoint
    session: Any  # Session
    resources: Any  # ResourceRepository
    keyring: Any  # KeyRing


@contextmanager
def _governance(commit: bool = True) -> Iterator[_Governance]:
    """The enforcement point over a migrated database, one session; commits on success.
    Known errors (configuration, policy, consent, break-glass) end the command cleanly."""
    from unified_record.audit import AuditWriteError
    from unified_record.consent import (
        AccessRefused,
        BreakGlassError,
        ConsentError,
        EnforcementPoint,
        PolicyError,
    )
    from unified_record.security import load_or_create_keys
    from unified_record.store import ResourceRepository, make_engine, migrate
    from unified_record.store.db import make_session_factory

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        keyring, blind_index = load_or_create_keys(settings)
        point = EnforcementPoint.from_settings(settings, engine, keyring)
        migrate(engine)
        with make_session_factory(engine)() as session:
            yield _Governance(settings, point, session,
                              ResourceRepository(session, keyring, blind_index), keyring)
            if commit:
                session.commit()
    except (ConfigError, PolicyError, ConsentError, BreakGlassError, AccessRefused,
            AuditWriteError) as exc:
        _fail(str(exc))
    finally:
        engine.dispose()


# -- consent ---------------------------------------------------------------------------------


@consent_app.command("add")
def consent_add(
    client_id: str = typer.Argument(..., help="The unified client id."),
    deny: bool = typer.Option(False, "--deny", help="An objection (a deny provision)."),
    permit: bool = typer.Option(False, "--permit", help="An explicit consent (permit)."),
    purpose: list[str] = typer.Option([], "--purpose", help="Purpose of use (v3 ActReason); "
                                      "repeat for more. None: every purpose."),
    to_org: list[str] = typer.Option([], "--to-org", help="Sharing with this organisation "
                                     "(ODS or council code)."),
    to_role: list[str] = typer.Option([], "--to-role", help="Sharing with this role."),
    from_org: list[str] = typer.Option([], "--from-org", help="Data from this source "
                                       "organisation."),
    category: list[str] = typer.Option([], "--category", help="A sensitive category."),
    resource_type: list[str] = typer.Option([], "--type", help="A FHIR resource type."),
    resource_class: list[str] = typer.Option([], "--class", help="A policy resource class."),
    start: datetime | None = typer.Option(None, "--start", help="From (ISO date or time)."),
    end: datetime | None = typer.Option(None, "--end", help="Until (ISO date or time)."),
    by: str = typer.Option(..., "--by", help="Who records it (the officer's user id)."),
) -> None:
    """Record a person's objection (--deny) or explicit consent (--permit); prints its id."""
    from unified_record.consent.records import build_consent

    if deny == permit:
        _fail("give exactly one of --deny or --permit")
    with _governance() as gov:
        consent = build_consent(
            gov.point.policy, client_id=client_id, effect="deny" if deny else "permit",
            purposes=purpose, recipient_orgs=to_org, recipient_roles=to_role,
            source_orgs=from_org, categories=category, resource_types=resource_type,
            resource_classes=resource_class, start=_utc(start), end=_utc(end))
        stored = gov.point.record_consent(gov.session, gov.resources, by, consent)
        unknown = sorted((set(to_org) | set(from_org)) - set(gov.point.policy.organisations))
    typer.echo(f"recorded Consent/{stored['id']} ({'deny' if deny else 'permit'}) for client "
               f"{client_id}")
    for code in unknown:  # a typo here would silently protect nothing
        typer.echo(f"note: organisation {code} is not in the policy's organisations; check "
                   "the code", err=True)


@consent_app.command("list")
def consent_list(client_id: str = typer.Argument(..., help="The unified client id.")) -> None:
    """A client's consents and objections, active or withdrawn, oldest first."""
    from unified_record.consent.enforcement import merged_client_ids
    from unified_record.consent.records import list_consents, parse_consent

    with _governance(commit=False) as gov:
        consents = list_consents(gov.resources, merged_client_ids(gov.session, client_id))
        rows = []
        for consent in consents:
            directive = parse_consent(consent, gov.point.policy)
            base = directive.provisions[0]
            rows.append((consent["id"], consent["meta"]["versionId"], directive.status,
                         base.effect, str(consent.get("dateTime", ""))[:19], _describe(base)))
    if not rows:
        typer.echo(f"no consents recorded for client {client_id}")
    for row in rows:
        typer.echo("  ".join(str(value) for value in row))


@consent_app.command("withdraw")
def consent_withdraw(
    consent_id: str = typer.Argument(..., help="The Consent id."),
    by: str = typer.Option(..., "--by", help="Who records the withdrawal."),
) -> None:
    """Withdraw a consent or objection (status inactive, a new version; history kept)."""
    with _governance() as gov:
        stored = gov.point.withdraw_consent(gov.session, gov.resources, by, consent_id)
    typer.echo(f"Consent/{stored['id']} is now {stored['status']} "
               f"(version {stored['meta']['versionId']})")


# -- opt-out ---------------------------------------------------------------------------------


@optout_app.command("set")
def optout_set(client_id: str = typer.Argument(..., help="The unified client id."),
               by: str = typer.Option(..., "--by", help="Who records it.")) -> None:
    """Record the client's National Data Opt-out (research and planning are denied)."""
    _opt_out(client_id, by, True)


@optout_app.command("clear")
def optout_clear(client_id: str = typer.Argument(..., help="The unified client id."),
                 by: str = typer.Option(..., "--by", help="Who records it.")) -> None:
    """Clear the client's National Data Opt-out."""
    _opt_out(client_id, by, False)


def _opt_out(client_id: str, by: str, value: bool) -> None:
    with _governance() as gov:
        changed = gov.point.set_opt_out(gov.session, by, client_id, value)
    state = "set" if value else "cleared"
    typer.echo(f"National Data Opt-out {state} for client {client_id}" if changed
               else f"National Data Opt-out already {state} for client {client_id}")


# -- break-glass -----------------------------------------------------------------------------


@breakglass_app.command("list")
def breakglass_list(
    show_all: bool = typer.Option(False, "--all", help="Closed grants too."),
    client_id: str | None = typer.Option(None, "--client", help="Only this client."),
) -> None:
    """The review queue: break-glass grants a governance officer has not closed yet."""
    from unified_record.consent.breakglass import list_grants

    with _governance(commit=False) as gov:
        reviews = list_grants(gov.session, gov.keyring, open_only=not show_all,
                              client_id=client_id)
    if not reviews:
        typer.echo("no break-glass grants awaiting review" if not show_all
                   else "no break-glass grants")
    for review in reviews:
        grant = review.grant
        status = (f"closed {review.outcome} by {review.reviewed_by}" if review.outcome
                  else "awaiting review")
        typer.echo(f"{grant.id}  client {grant.client_id}  {grant.sub} "
                   f"({grant.role or '-'}, {grant.organisation or '-'})  "
                   f"{grant.granted_at.isoformat(timespec='seconds')} to "
                   f"{grant.expires_at.isoformat(timespec='seconds')}  {status}  "
                   f"reason: {review.reason}")


@breakglass_app.command("close")
def breakglass_close(
    grant_id: str = typer.Argument(..., help="The grant id."),
    outcome: str = typer.Option(..., "--outcome",
                                help="appropriate | inappropriate | referred"),
    by: str = typer.Option(..., "--by", help="The governance officer closing it."),
    note: str = typer.Option("", "--note", help="Notes (stored encrypted)."),
) -> None:
    """Close a grant's review with an outcome."""
    with _governance() as gov:
        grant = gov.point.close_break_glass(gov.session, by, grant_id, outcome, note)
    typer.echo(f"break-glass grant {grant.id} closed: {outcome}")


# -- policy ----------------------------------------------------------------------------------


@policy_app.command("check")
def policy_check(folder: Path | None = typer.Option(
        None, "--dir", help="Policy folder (default: UR_CONSENT_DIR or consent/).")) -> None:
    """Validate consent/*.yaml; exit 1 naming the file and rule at fault."""
    from unified_record.consent.policy import PolicyError, load_policy

    folder = folder or _settings().resolved_consent_dir
    try:
        policy = load_policy(folder)
    except PolicyError as exc:
        typer.echo(f"policy INVALID: {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"policy OK: {len(policy.roles)} roles, {len(policy.purposes)} purposes, "
               f"{len(policy.categories)} categories, {len(policy.resource_classes)} resource "
               f"classes, {len(policy.rules)} rules ({folder})")


# -- audit -----------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the hash chain and the signed checkpoints; exit 1 naming the first bad entry."""
    from unified_record.audit import load_audit_signer, load_verify_keys, verify_audit_log
    from unified_record.store import make_engine, migrate

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        signer = None
        if settings.audit_signing_key or settings.env != "production":
            signer = load_audit_signer(settings)
        keys = load_verify_keys(settings, signer)
        if not keys:
            _fail("no key to verify checkpoints with: set UR_AUDIT_VERIFY_KEYS or "
                  "UR_AUDIT_SIGNING_KEY")
        migrate(engine)
        report = verify_audit_log(engine, keys)
    except ConfigError as exc:
        _fail(str(exc))
    finally:
        engine.dispose()
    if not report.ok:
        typer.echo(report.summary())
        raise typer.Exit(code=1)
    typer.echo(report.summary())


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign the log's current head now (before an export or archive)."""
    with _governance(commit=False) as gov:
        seq = gov.point.audit.checkpoint()
    typer.echo(f"signed checkpoint at entry {seq}" if seq else "the audit log is empty")


@audit_app.command("trail")
def audit_trail(
    client_id: str = typer.Argument(..., help="The unified client id."),
    output: str = typer.Option("table", "--format", help="table | csv | bundle"),
) -> None:
    """Who accessed a client's record, when and why (subject access: csv or bundle)."""
    from unified_record.audit.reports import access_line, client_trail, trail_bundle, trail_csv
    from unified_record.consent.enforcement import merged_client_ids

    if output not in ("table", "csv", "bundle"):
        _fail("--format must be table, csv or bundle")
    with _governance(commit=False) as gov:
        records = client_trail(gov.point.audit, merged_client_ids(gov.session, client_id))
    if output == "bundle":
        typer.echo(json.dumps(trail_bundle(records), indent=2))
        return
    lines = [access_line(r) for r in records]
    if output == "csv":
        typer.echo(trail_csv(lines), nl=False)
        return
    if not lines:
        typer.echo(f"no audit entries for client {client_id}")
    for line in lines:
        typer.echo(_line(line))


@audit_app.command("denied")
def audit_denied(since: datetime | None = typer.Option(None, "--since",
                                                       help="From (ISO date or time).")
                 ) -> None:
    """Denied accesses, oldest first."""
    from unified_record.audit.reports import access_line

    with _governance(commit=False) as gov:
        records = gov.point.audit.entries(decision="deny", since=_utc(since))
    if not records:
        typer.echo("no denied accesses")
    for record in records:
        typer.echo(_line(access_line(record)))


def _line(line: Any) -> str:
    flag = "  BREAK-GLASS" if line.break_glass else ""
    return (f"{line.seq}  {line.recorded}  {line.event}  {line.decision}  client "
            f"{line.client_id or '-'}  {line.user} ({line.role or '-'}, "
            f"{line.organisation or '-'})  purpose {line.purpose or '-'}  returned "
            f"{line.returned} withheld {line.withheld}{flag}")


def _describe(provision: Any) -> str:
    parts = []
    for label, values in (("to", provision.recipient_orgs | provision.recipient_roles),
                          ("from", provision.source_orgs), ("purpose", provision.purposes),
                          ("type", provision.resource_types | provision.resource_classes),
                          ("category", provision.categories)):
        if values:
            parts.append(f"{label} {','.join(sorted(values))}")
    if provision.start or provision.end:
        parts.append(f"period {_day(provision.start)}..{_day(provision.end)}")
    return "; ".join(parts) or "all sharing"


def _day(value: datetime | None) -> str:
    return value.date().isoformat() if value else ""


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
