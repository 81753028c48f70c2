"""Copying a bulk load's SQLite WAL into the database from a thread of its own.

A checkpoint ends with an fsync of the database file. Run by the writer whose commit took
the WAL past `wal_autocheckpoint`, it kept the write lock for the seconds the disk took,
and every other process soon waited for that lock: at 100,000 people, each checkpoint
showed as a second or two with a core idle and the CPU waiting for I/O. This thread copies
the WAL while the writers go on (a PASSIVE checkpoint takes no lock from them), and takes
the write lock only to copy the little committed meanwhile and truncate the WAL, so that
it starts again from its beginning instead of growing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy.engine import Engine

__all__ = ["Checkpointer"]

UNLOCKED_ROUNDS = 3  # passive copies before the locked one: each copies what came during the last
SMALL_REST = 2_000  # pages left to copy that are not worth another unlocked round


class Checkpointer:
    """Checkpoints `engine`'s SQLite WAL once it holds `pages` pages, from a thread.

    `write_lock`: what every writer of the database holds while it writes (a context
    manager; see `ingest.batch_store.Turns`). Use as a context manager: the thread runs
    inside it. `checkpoints` counts the WAL truncations done, for the tests."""

    def __init__(self, engine: Engine, write_lock: Callable[[], AbstractContextManager[Any]],
                 pages: int, poll_seconds: float = 0.2) -> None:
        if engine.dialect.name != "sqlite" or not engine.url.database:
            raise ValueError("only a SQLite database in a file has a WAL to checkpoint")
        self._engine = engine
        self._write_lock = write_lock
        self._pages = pages
        self._poll = poll_seconds
        self._wal = f"{engine.url.database}-wal"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0
        self.error: BaseException | None = None

    def __enter__(self) -> Checkpointer:
        self._thread = threading.Thread(target=self._run, name="wal-checkpointer", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        try:
            with self._engine.connect() as connection:
                dbapi: Any = connection.connection.dbapi_connection
                page_size = dbapi.execute("PRAGMA page_size").fetchone()[0]
                while not self._stop.wait(self._poll):
                    if self._wal_bytes() >= self._pages * page_size:
                        self._checkpoint(dbapi)
        except BaseException as exc:  # the writers' own checkpoints still bound the WAL
            self.error = exc

    def _checkpoint(self, dbapi: Any) -> None:
        for _ in range(UNLOCKED_ROUNDS):
            _busy, log, copied = dbapi.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if log - copied < SMALL_REST or self._stop.is_set():
                break
        with self._write_lock():
            dbapi.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        self.checkpoints += 1

    def _wal_bytes(self) -> int:
        try:
            return os.path.getsize(self._wal)
        except OSError:
            return 0
