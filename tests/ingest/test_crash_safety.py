"""SIGKILL in the middle of a large feed, then run again: every message stored exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from unified_record.synthetic import generate_dataset, load_profile


def _env(tmp_path: Path, database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(UR_DATABASE_URL=database_url, UR_DATA_DIR=str(tmp_path / "var"))
    return env


def _ingest(tmp_path: Path, database_url: str, feed_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "unified_record", "ingest", "--feed", "gp_fhir", str(feed_dir),
         "--quiet", "--workers", "2", "--batch-size", "1000"],
        env=_env(tmp_path, database_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        for task in Path(f"/proc/{current}/task").iterdir():
            children = [int(c) for c in (task / "children").read_text().split()]
            found += children
            stack += children
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie is reaped by init soon enough)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _has_lookup_index(engine: sa.Engine) -> bool:
    return "ix_search_index_param_value_hash" in {
        i["name"] for i in sa.inspect(engine).get_indexes("search_index")}


@pytest.mark.slow
def test_sigkill_mid_feed_then_rerun_stores_every_message_once(
    tmp_path: Path, database_url: str
) -> None:
    dataset = tmp_path / "ds"
    generate_dataset(2_500, 11, dataset, load_profile(), workers=1)
    feed_dir = dataset / "gp_fhir"
    lines = sum(1 for f in feed_dir.glob("*.ndjson") for line in f.open("rb") if line.strip())

    engine = sa.create_engine(database_url)
    victim = _ingest(tmp_path, database_url, feed_dir)
    deadline = time.monotonic() + 120
    stored = 0
    while time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.2)
        try:
            with engine.connect() as conn:
                stored = conn.execute(sa.text("SELECT count(*) FROM resource")).scalar_one()
        except sa.exc.SQLAlchemyError:
            continue  # tables not created yet
        if stored > 500:
            break
    assert victim.poll() is None, "ingest finished before it could be killed; use more data"
    helpers = _descendants(victim.pid)
    assert len(helpers) >= 3, "fork server and two workers"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert stored > 0
    deadline = time.monotonic() + 20
    while (left := [pid for pid in helpers if _running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, "the killed run's worker processes must end with it"
    # A bulk load into an empty store builds the blind index's lookup index at its end, so
    # the killed run left it out; the next run's migration must build it again.
    assert not _has_lookup_index(engine)

    rerun = _ingest(tmp_path, database_url, feed_dir)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err.decode()[-2000:]

    with engine.connect() as conn:
        messages = conn.execute(sa.text(
            "SELECT status, count(*) FROM inbound_message GROUP BY status")).all()
        max_version = conn.execute(sa.text("SELECT max(version_id) FROM resource")).scalar_one()
        versions = conn.execute(sa.text("SELECT count(*) FROM resource_version")).scalar_one()
        resources = conn.execute(sa.text("SELECT count(*) FROM resource")).scalar_one()
        patients = conn.execute(sa.text(
            "SELECT count(*) FROM resource WHERE resource_type = 'Patient'")).scalar_one()
    assert _has_lookup_index(engine)
    engine.dispose()
    assert dict(messages) == {"accepted": lines}, "each message once, all accepted"
    assert patients == lines, "one Patient per GP Bundle"
    assert max_version == 1 and versions == resources, "no resource stored twice"
