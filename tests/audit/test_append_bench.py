"""bench/audit_append.py end to end (PostgreSQL): it times read COMMITs with and without an
audit entry at every pause it is given, and what it appends is a valid part of the chain."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pg_support import needs_pg, pg_schema

from unified_record.store import make_engine, make_session_factory, migrate
from unified_record.store.models import ClientRow

REPO = Path(__file__).resolve().parents[2]

# The bench measures PostgreSQL's commit with its WAL flush and refuses SQLite by design.
pytestmark = needs_pg


def test_the_bench_times_commits_with_and_without_an_entry(tmp_path: Path) -> None:
    with pg_schema() as url:
        migrate(url)
        engine = make_engine(url)
        with make_session_factory(engine)() as session:
            session.add_all([ClientRow(id=f"C00000000000{n}", status="active",
                                       replaced_by=None, created_run=1, updated_run=1)
                             for n in range(3)])
            session.commit()
        engine.dispose()
        env = {**os.environ, "UR_DATABASE_URL": url, "UR_DATA_DIR": str(tmp_path / "var")}
        done = subprocess.run(
            [sys.executable, str(REPO / "bench" / "audit_append.py"), "--appends", "15",
             "--busy-ms", "0,1"], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        rows = [line.split("|")[1:-1] for line in done.stdout.splitlines()
                if line.startswith("| ") and line[2].isdigit()]
        assert [row[0].strip() for row in rows] == ["0", "1"]
        for row in rows:
            assert all(float(cell) > 0 for cell in row[1:3]), row
        verified = subprocess.run([sys.executable, "-m", "unified_record", "audit", "verify"],
                                  env=env, capture_output=True, text=True, timeout=120)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.startswith("OK: 30 entries")  # every append, in the chain
