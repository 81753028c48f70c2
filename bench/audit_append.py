"""Benchmark: what one audit entry costs a read's COMMIT, in a tight loop and as a service
runs it, with work between requests (issue 7).

An API read ends with COMMIT; with consent and audit on, its AuditEvent is appended in that
COMMIT (`AuditLog.append_at_commit`: the INSERT and the COMMIT in one pipeline, which must
then flush the WAL to disk). This times a read transaction's COMMIT with and without one
search-sized entry, alternating, after a pause in which this process computes as a request
would between its statements (`--busy-ms`). On this machine's virtual cores the same
PostgreSQL work takes two to three times longer after such a pause than in a tight loop,
which is why the in-process and load benches see the audit cost more than a loop does.

    export UR_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/ur_api_bench
    export UR_DATA_DIR=/tmp/apibench/var            # the population of bench/api_load.py
    .venv/bin/python bench/audit_append.py [--appends 1000] [--busy-ms 0,5]

The entries are real appends to that database's audit log (they verify like any other).
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from unified_record.audit import AuditLog
from unified_record.audit.events import Agent, Entity, audit_event
from unified_record.audit.signing import load_audit_signer
from unified_record.config import load_settings
from unified_record.store import make_engine


def busy(milliseconds: float) -> None:
    """Compute (not sleep) for this long, as a request does between its statements."""
    end = time.perf_counter() + milliseconds / 1000
    while time.perf_counter() < end:
        sum(range(100))


def search_event(client_id: str) -> dict[str, Any]:
    """An entry like a partner system's search: one client, its golden Patient returned."""
    agent = Agent(user="bench", user_system="https://bench.example", organisation="A81001",
                  role="partner_system", oauth_client_id="bench")
    return audit_event(subtype="search-type", agent=agent, recorded=datetime.now(UTC),
                       decision="permit", purpose="TREAT", client_id=client_id,
                       entities=[Entity(role="24", detail=(("parameters", "identifier"),)),
                                 Entity(f"Patient/{client_id}", outcome="returned")],
                       source_address="192.0.2.1", outcome_desc="1 returned, 0 withheld")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=1000)
    parser.add_argument("--busy-ms", default="0,5",
                        help="comma-separated pauses of computing before each COMMIT")
    args = parser.parse_args()
    settings = load_settings()
    if settings.database_url.startswith("sqlite"):
        raise SystemExit("set UR_DATABASE_URL to the PostgreSQL bench database")
    engine = make_engine(settings.database_url)
    log = AuditLog(engine, load_audit_signer(settings), settings.audit_checkpoint_every)
    with engine.connect() as conn:
        clients = list(conn.execute(sa.text(
            "SELECT id FROM client WHERE status = 'active' ORDER BY id LIMIT 2000")).scalars())
    print(f"| ms of work before each COMMIT | read COMMIT, median µs | with one audit entry, "
          f"median µs | added µs | ({args.appends:,} of each) |")
    print("|---|---|---|---|---|")
    for pause in (float(p) for p in args.busy_ms.split(",")):
        taken: dict[bool, list[float]] = {False: [], True: []}
        for number in range(2 * args.appends):
            audited = number % 2 == 1
            client_id = clients[number % len(clients)]
            with Session(engine) as session:
                session.execute(sa.text("SELECT status FROM client WHERE id = :id"),
                                {"id": client_id}).all()
                if audited:
                    log.append_at_commit(session, [search_event(client_id)])
                busy(pause)
                started = time.perf_counter()
                session.commit()
                taken[audited].append((time.perf_counter() - started) * 1e6)
        plain, with_entry = (statistics.median(taken[k]) for k in (False, True))
        print(f"| {pause:g} | {plain:.0f} | {with_entry:.0f} | {with_entry - plain:.0f} | |")
    engine.dispose()


if __name__ == "__main__":
    main()
