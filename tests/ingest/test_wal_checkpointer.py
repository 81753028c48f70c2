"""A SQLite bulk load's WAL is checkpointed by a thread (store.checkpointer), which takes
the writers' lock only for the last, short part and then truncates the WAL."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from ingest_support import MAPPINGS, SAMPLE, make_keys

from unified_record.ingest import Pipeline
from unified_record.ingest import pipeline as pipeline_module
from unified_record.store import make_engine
from unified_record.store.checkpointer import Checkpointer
from unified_record.store.db import BULK_WAL_AUTOCHECKPOINT, BULK_WAL_PAGES


def _wait_for(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'wal.db'}", bulk_load=True)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    yield engine
    engine.dispose()


def _write(engine: sa.Engine, rows: int, start: int = 0) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t (id, v) VALUES (?, ?)",
                             [(start + i, os.urandom(2000)) for i in range(rows)])


def test_the_thread_truncates_the_wal_holding_the_writers_lock(engine: sa.Engine) -> None:
    lock = threading.Lock()

    @contextmanager
    def write_lock() -> Iterator[None]:
        with lock:
            yield

    wal = Path(f"{engine.url.database}-wal")
    with Checkpointer(engine, write_lock, pages=50, poll_seconds=0.01) as checkpointer:
        with lock:  # a writer is writing: the WAL grows, and is not truncated meanwhile
            _write(engine, 500)
            big = wal.stat().st_size
            time.sleep(0.3)
            assert checkpointer.checkpoints == 0
            assert wal.stat().st_size >= big
        assert _wait_for(lambda: checkpointer.checkpoints >= 1)
        assert _wait_for(lambda: wal.stat().st_size == 0)  # truncated once the lock was free
        for round_ in range(1, 4):  # again and again, as a load goes on
            with lock:
                _write(engine, 500, start=round_ * 1000)
            assert _wait_for(lambda n=round_ + 1: checkpointer.checkpoints >= n)
        assert checkpointer.error is None
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 2000
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


def test_a_small_wal_is_left_to_grow(engine: sa.Engine) -> None:
    with Checkpointer(engine, threading.Lock, pages=100_000, poll_seconds=0.01) as checkpointer:
        _write(engine, 100)
        time.sleep(0.2)
        assert checkpointer.checkpoints == 0
    assert Path(f"{engine.url.database}-wal").stat().st_size > 0


def test_bulk_writers_checkpoint_themselves_only_as_a_backstop(engine: sa.Engine) -> None:
    assert BULK_WAL_AUTOCHECKPOINT > BULK_WAL_PAGES
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == \
            BULK_WAL_AUTOCHECKPOINT


def test_only_a_sqlite_file_has_a_wal_to_checkpoint() -> None:
    with pytest.raises(ValueError, match="SQLite"):
        Checkpointer(make_engine("sqlite://"), threading.Lock, pages=10)


def test_a_bulk_load_with_workers_checkpoints_from_its_thread_and_stops_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline_module, "BULK_WAL_PAGES", 20)
    keyring, blind_index = make_keys()
    url = f"sqlite:///{tmp_path / 'load.db'}"
    with Pipeline(url, keyring, blind_index, MAPPINGS, workers=2, batch_size=10,
                  bulk_load=True) as p:
        stats = p.ingest_path("community_health", SAMPLE / "community_health")
        checkpointer = p._checkpointer
        assert checkpointer is not None
        assert _wait_for(lambda: checkpointer.checkpoints > 0)
    assert p._checkpointer is None
    assert not any(t.name == "wal-checkpointer" for t in threading.enumerate())
    assert checkpointer.error is None and stats.accepted == stats.messages > 0
    p.engine.dispose()


def test_a_load_that_is_not_bulk_starts_no_thread(tmp_path: Path) -> None:
    keyring, blind_index = make_keys()
    with Pipeline(f"sqlite:///{tmp_path / 'load.db'}", keyring, blind_index, MAPPINGS,
                  workers=2, batch_size=10) as p:
        p.ingest_path("community_health", SAMPLE / "community_health")
        assert p._checkpointer is None
    p.engine.dispose()


def test_every_worker_starts_with_the_pool(tmp_path: Path) -> None:
    """The pool starts a process per task it is given: all of them start at once, while
    the first batch is read, not one by one as the first batches come."""
    keyring, blind_index = make_keys()
    with Pipeline(f"sqlite:///{tmp_path / 'load.db'}", keyring, blind_index, MAPPINGS,
                  workers=2, bulk_load=True) as p:
        p._start_pool()
        assert p._pool is not None
        assert len(p._pool._processes) == 2  # type: ignore[attr-defined]
    p.engine.dispose()
