"""The ingest pipeline: raw message first, then map, validate and store.

For each batch of messages:
1. every raw message is stored (encrypted) and committed before anything else happens, so
   nothing received is ever lost; a message already accepted or quarantined is a duplicate;
2. messages are prepared (parsed, mapped, validated) — in a process pool when `workers > 1`;
3. each message's resources are stored under a savepoint and the message marked accepted,
   or it is marked quarantined with a readable reason; the batch commits once.

With a pool, the worker that prepared a batch also stores it (`ingest.batch_store`): in
the order the batches were read, one writer at a time, so that this process only reads
the feeds and stores raw messages, and nothing prepared is pickled back. Workers seal each
resource in advance as a new resource (canonical JSON, AES-GCM, blind-index HMACs:
`store.batch.seal_new`); one that turns out to exist already is opened, compared and
sealed again as its next version when stored. A database that lives only in this process
(SQLite in memory) is stored here, from the envelopes the workers send back.

A crash between 1 and 3 leaves messages `pending`; the next run processes them again, and
resource ids derived from the source make that converge: every message stored exactly once.
"""

from __future__ import annotations

import gc
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from sqlalchemy.engine import Engine

from unified_record.ingest.batch_store import BatchStore, StoredBatch, Turns
from unified_record.ingest.mapping import FeedMapping, load_mappings
from unified_record.ingest.prepare import Prepared, prepare
from unified_record.ingest.sources import SourceMessage, iter_messages
from unified_record.security import BlindIndex, KeyRing
from unified_record.store import UnitOfWork, make_engine, migrate
from unified_record.store.batch import (
    NewMessage,
    add_messages,
    seal_new,
)
from unified_record.store.db import (
    deferred_for_bulk_load,
    make_session_factory,
    refresh_statistics,
)
from unified_record.store.resources import _now

ProgressCallback = Callable[[int], None]


@dataclass
class IngestStats:
    feed: str
    messages: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    resources: int = 0
    with_warnings: int = 0

    def add(self, other: IngestStats) -> None:
        for name in ("messages", "accepted", "quarantined", "duplicates", "resources",
                     "with_warnings"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class Outcome:
    """What happened to one message (for MLLP acknowledgements)."""

    status: str  # accepted | quarantined | duplicate
    reason: str | None


# Worker-process state: mappings and keys are loaded once per worker, at pool start.
_worker_mappings: dict[str, FeedMapping] = {}
_worker_keys: list[tuple[KeyRing, BlindIndex]] = []
_worker_store: list[tuple[BatchStore, Turns]] = []


def _init_worker(mappings_dir: str, owner_pid: int, keyring: KeyRing,
                 blind_index: BlindIndex, store: tuple[str, bool, Turns] | None = None
                 ) -> None:
    """`store`: (database URL, bulk load, the pool's turns) when the workers store what
    they prepare; None when they only prepare."""
    _exit_with_owner(owner_pid)
    _worker_mappings.update(load_mappings(Path(mappings_dir)))
    _worker_keys.append((keyring, blind_index))
    if store is not None:
        url, bulk_load, turns = store
        engine = make_engine(url, bulk_load=bulk_load)
        _worker_store.append((BatchStore(make_session_factory(engine), keyring, blind_index),
                              turns))
    # What a worker has loaded so far stays for its life, and the collector need not look
    # at it again; collect the young generation less often.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# Mapping, validating and (un)pickling a batch make and keep tens of thousands of small
# objects; with CPython's default thresholds (700, 10, 10) the cyclic collector ran so
# often that it took a fifth of a worker's time and most of the unpickling of its results
# in the main process. Nothing here makes reference cycles worth collecting sooner.
GC_THRESHOLDS = (20_000, 50, 100)
_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, int, int] = (0, 0, 0)


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the cyclic collector's thresholds to GC_THRESHOLDS while a bulk ingest runs in
    this process (they are process-wide: restored when the last user is done)."""
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(*(max(a, b) for a, b in zip(_gc_saved, GC_THRESHOLDS,
                                                          strict=True)))
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0:
                gc.set_threshold(*_gc_saved)


# A batch's work: prepared here, or handed to a worker that prepares it (and, when workers
# store, stores it too).
_Work = Future[list[Prepared]] | Future[StoredBatch] | list[Prepared]
# Batches sent to the workers and not yet stored, oldest first: (feed, the messages stored
# raw, their work, still running or done).
_InFlight = deque[tuple[str, list[tuple[str, SourceMessage]], _Work]]


def _exit_with_owner(owner_pid: int) -> None:
    """End this worker when the ingest process that owns the pool ends, however it ends.

    A forkserver worker's parent is the fork server, and every worker holds the server's
    liveness pipe, so after a SIGKILL of the owner neither would ever notice on its own:
    they would wait on their queue forever. A thread waits on the owner's pidfd instead.
    """
    import select
    import threading

    try:
        pidfd = os.pidfd_open(owner_pid)
    except (AttributeError, OSError):  # not Linux, or the owner is already gone
        if not _alive(owner_pid):
            os._exit(1)
        return

    def wait() -> None:
        select.select([pidfd], [], [])
        os._exit(1)

    threading.Thread(target=wait, name="owner-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _prepare_batch(feed: str, raws: list[bytes]) -> list[Prepared]:
    mapping = _worker_mappings[feed]
    keyring, blind_index = _worker_keys[0]
    return [_sealed(prepare(mapping, raw), keyring, blind_index) for raw in raws]


def _prepare_and_store(feed: str, message_ids: list[str], raws: list[bytes],
                       number: int) -> StoredBatch:
    """Prepare a batch, then store it when its turn comes (see `Turns`)."""
    results = _prepare_batch(feed, raws)
    store, turns = _worker_store[0]
    return turns.store_in_turn(number, lambda: store.store(feed, message_ids, results))


def _sealed(prep: Prepared, keyring: KeyRing, blind_index: BlindIndex) -> Prepared:
    """Seal every resource of a prepared message in advance, as if it were new, and drop
    what the envelope and its index hashes now hold (see PreparedResource). A message's
    resources share one lastUpdated, as they would had one transaction stored them."""
    now = _now()
    for item in prep.resources:
        assert item.resource is not None
        item.sealed = seal_new(keyring, blind_index, item.resource, item.labels, item.index,
                               now)
        if item.sealed is not None:
            item.resource, item.index = None, []
    return prep


BATCH_SIZE = 1000  # messages per batch (one transaction for their raw bytes, one for the rest)
# A bulk load's batches are larger: each batch's inserts land on random pages of the search
# index and the keys' B-trees, and every page a transaction changes is written whole to the
# WAL at its commit, so past a few hundred thousand rows the pages written per message fall
# as a batch grows (at 100,000 people, SQLite: 16 GB written with batches of 5,000, 33 GB
# with 1,000; docs/benchmarks.md). Larger still gained nothing: the workers and this process
# overlap less when the pipeline holds fewer, larger batches.
BULK_BATCH_SIZE = 5000


class Pipeline:
    """Ingests feeds into the store. Use as a context manager to release the worker pool."""

    def __init__(self, database_url: str | Engine, keyring: KeyRing, blind_index: BlindIndex,
                 mappings_dir: Path, *, workers: int = 1, batch_size: int | None = None,
                 bulk_load: bool = False,
                 on_patients: Callable[[list[str]], object] | None = None) -> None:
        """`bulk_load`: commits need not wait for the disk (see `store.db.make_engine`) and
        batches default to `BULK_BATCH_SIZE` messages, not `BATCH_SIZE`; for loading files,
        never for the MLLP listener, whose ACK promises a durable message.
        `on_patients`: called after each committed batch with the ids of the Patients it
        stored (new or changed), e.g. to match them against the client index at once."""
        if batch_size is None:
            batch_size = BULK_BATCH_SIZE if bulk_load else BATCH_SIZE
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.engine = (make_engine(database_url, bulk_load=bulk_load)
                       if isinstance(database_url, str) else database_url)
        migrate(self.engine)
        self.sessions = make_session_factory(self.engine)
        self.keyring = keyring
        self.blind_index = blind_index
        self.mappings_dir = mappings_dir
        self.mappings = load_mappings(mappings_dir)
        self.batch_size = batch_size
        self.bulk_load = bulk_load
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._batches_stored = 0
        self.store = BatchStore(self.sessions, keyring, blind_index)
        self._turns: Turns | None = None  # when the workers store (see _prepare)
        self._numbered = 0  # batches handed to storing workers so far
        self.on_patients = on_patients

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._turns is not None:
            self._turns.fail()  # a worker waiting for a cancelled batch's turn ends
            self._turns = None
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.sessions, self.keyring, self.blind_index)

    def mapping(self, feed: str) -> FeedMapping:
        try:
            return self.mappings[feed]
        except KeyError:
            known = ", ".join(sorted(self.mappings))
            raise ValueError(f"no mapping for feed {feed!r} (known: {known})") from None

    # --- entry points -------------------------------------------------------------------------

    def ingest_path(self, feed: str, path: Path,
                    on_messages: ProgressCallback | None = None) -> IngestStats:
        """Ingest a file or a folder of files of one feed."""
        mapping = self.mapping(feed)
        return self.ingest_messages(feed, iter_messages(mapping.format, path), on_messages)

    def ingest_dataset(self, root: Path, on_messages: ProgressCallback | None = None,
                       on_feed: Callable[[str], None] | None = None) -> dict[str, IngestStats]:
        """Ingest every sub-folder of `root` that is named after a feed mapping.

        The feeds follow each other without draining the pipeline in between: the workers
        prepare the next feed's first batches while this process stores the last ones of
        the previous feed (in order: a feed's batches are stored after the earlier feed's).
        """
        folders = self.dataset_folders(root)
        results = {folder.name: IngestStats(folder.name) for folder in folders}

        def streams() -> Iterator[tuple[str, Iterable[SourceMessage]]]:
            for folder in folders:
                if on_feed:
                    on_feed(folder.name)
                yield folder.name, iter_messages(self.mapping(folder.name).format, folder)

        with fewer_collections():
            self._ingest_streams(streams(), results, on_messages)
        return results

    def dataset_folders(self, root: Path) -> list[Path]:
        """The feed folders of a dataset; ValueError names any folder with no mapping."""
        if not root.is_dir():
            raise ValueError(f"{root}: not a folder")
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        unknown = [p.name for p in folders if p.name not in self.mappings]
        if unknown:
            raise ValueError(f"{root}: no mapping for sub-folder(s) {unknown}")
        return folders

    def ingest_messages(self, feed: str, messages: Iterable[SourceMessage],
                        on_messages: ProgressCallback | None = None) -> IngestStats:
        stats = IngestStats(feed)
        with fewer_collections():
            self._ingest_streams([(feed, messages)], {feed: stats}, on_messages)
        return stats

    def _ingest_streams(self, streams: Iterable[tuple[str, Iterable[SourceMessage]]],
                        results: dict[str, IngestStats],
                        on_messages: ProgressCallback | None) -> None:
        in_flight: _InFlight = deque()
        with deferred_for_bulk_load(self.engine) if self.bulk_load else nullcontext():
            for feed, messages in streams:
                for batch in _batches(messages, self.batch_size):
                    results[feed].messages += len(batch)
                    todo = self._store_raw(feed, batch, results[feed])
                    in_flight.append((feed, todo,
                                      self._prepare(feed, todo)))
                    if len(in_flight) > self.workers:  # every worker busy while this stores
                        self._store_oldest(in_flight, results)
                        self._after_batch()
                    if on_messages:
                        on_messages(len(batch))
            while in_flight:
                self._store_oldest(in_flight, results)

    def _store_oldest(self, in_flight: _InFlight, results: dict[str, IngestStats]) -> None:
        feed, todo, prepared = in_flight.popleft()
        self._store_prepared(feed, todo, prepared, results[feed])

    def _after_batch(self) -> None:
        """Refresh planner statistics as the tables grow: after batch 1, 2, 4, 8, ..."""
        self._batches_stored += 1
        if self._batches_stored & (self._batches_stored - 1) == 0:
            refresh_statistics(self.engine)

    def process_one(self, feed: str, message: SourceMessage,
                    source_org: str | None = None) -> Outcome:
        """Ingest a single message now (the MLLP listener's and the FHIR API's path).

        `source_org`: the sender as authenticated (e.g. a partner's token), which then is the
        provenance of what it sent, whatever the message says (FHIR feeds)."""
        stats = IngestStats(feed)
        todo = self._store_raw(feed, [message], stats)
        if not todo:
            return Outcome("duplicate", None)
        prepared = [_sealed(prepare(self.mapping(feed), message.raw, source_org), self.keyring,
                            self.blind_index)]
        reasons = self._store_prepared(feed, todo, prepared, stats)
        status = "accepted" if stats.accepted else "quarantined"
        return Outcome(status, reasons[0] if reasons else None)

    def replay(self, feed: str | None = None,
               on_messages: ProgressCallback | None = None) -> dict[str, IngestStats]:
        """Re-process quarantined (and interrupted, still pending) messages, e.g. after a
        mapping fix. The raw bytes come from the store: nothing is read from the feed again."""
        with self.uow() as uow:
            ids = [(m.feed, m.id) for status in ("quarantined", "pending")
                   for m in uow.messages.with_status(status, feed)]
        results: dict[str, IngestStats] = {}
        for name in sorted({f for f, _ in ids}):
            stats = results.setdefault(name, IngestStats(name))
            batch_ids = [i for f, i in ids if f == name]
            for start in range(0, len(batch_ids), self.batch_size):
                chunk = batch_ids[start:start + self.batch_size]
                with self.uow() as uow:
                    todo = []
                    for message_id in chunk:
                        msg = uow.messages.get(message_id)
                        if msg is not None:
                            todo.append((msg.id, SourceMessage(uow.messages.raw_bytes(msg),
                                                               msg.locator or "")))
                stats.messages += len(todo)
                self._store_prepared(name, todo, self._prepare(name, todo),
                                     stats)
                if on_messages:
                    on_messages(len(todo))
        return results

    # --- stages -------------------------------------------------------------------------------

    def _store_raw(self, feed: str, batch: list[SourceMessage],
                   stats: IngestStats) -> list[tuple[str, SourceMessage]]:
        todo: dict[str, SourceMessage] = {}
        with self._one_writer(), self.uow() as uow:
            stored = add_messages(uow.session, self.keyring, self.blind_index, feed,
                                  [NewMessage(m.raw, m.locator, m.control_id) for m in batch])
            uow.commit()
        for message, msg in zip(batch, stored, strict=True):
            if (not msg.created and msg.status != "pending") or msg.id in todo:
                stats.duplicates += 1
                continue
            todo[msg.id] = message
        return list(todo.items())

    @contextmanager
    def _one_writer(self) -> Iterator[None]:
        """SQLite takes one writer at a time: while workers store, this process waits its
        turn for the write lock rather than for SQLite's busy timeout. A worker that died
        holding the lock breaks the pool, and the wait ends with the pool's error."""
        if self._turns is None or self.engine.dialect.name != "sqlite":
            yield
            return
        lock = self._turns.lock
        while not lock.acquire(timeout=1):
            if self._pool is not None and getattr(self._pool, "_broken", False):
                raise BrokenProcessPool("an ingest worker died holding the write lock")
        try:
            yield
        finally:
            lock.release()

    def _prepare(self, feed: str, todo: list[tuple[str, SourceMessage]]) -> _Work:
        raws = [message.raw for _, message in todo]
        if self.workers <= 1 or not raws:
            return [_sealed(prepare(self.mapping(feed), raw), self.keyring, self.blind_index)
                    for raw in raws]
        if self._pool is None:
            self._start_pool()
        assert self._pool is not None
        if self._turns is None:
            return self._pool.submit(_prepare_batch, feed, raws)
        self._numbered += 1
        return self._pool.submit(_prepare_and_store, feed, [i for i, _ in todo], raws,
                                 self._numbered - 1)

    def _start_pool(self) -> None:
        """Workers that prepare, and also store what they prepared unless the database
        lives only in this process (SQLite in memory)."""
        # forkserver, not fork: a forked worker would inherit the database connections,
        # and keep a killed ingest's transaction (and its locks) open on PostgreSQL.
        context = get_context("forkserver")
        # The fork server imports the pipeline's modules once, and each worker is forked
        # with them loaded, instead of every worker importing them again (about a second
        # and a half of CPU each). Takes effect where this process starts its fork server.
        context.set_forkserver_preload([__name__])
        self._numbered = 0
        url = self.engine.url
        store = None
        if url.get_backend_name() != "sqlite" or url.database not in (None, "", ":memory:"):
            self._turns = Turns(context)
            store = (url.render_as_string(hide_password=False), self.bulk_load, self._turns)
        self._pool = ProcessPoolExecutor(self.workers, mp_context=context,
                                         initializer=_init_worker,
                                         initargs=(str(self.mappings_dir), os.getpid(),
                                                   self.keyring, self.blind_index, store))

    def _store_prepared(self, feed: str, todo: list[tuple[str, SourceMessage]],
                        prepared: _Work, stats: IngestStats) -> list[str | None]:
        """Store a batch here, or take what the worker that prepared it stored."""
        try:
            done = prepared.result() if isinstance(prepared, Future) else prepared
        except BaseException:
            self.close()  # the batches after it must not be stored before it: start afresh
            raise
        if not isinstance(done, StoredBatch):
            with self._one_writer():
                done = self.store.store(feed, [message_id for message_id, _ in todo], done)
        stats.accepted += done.accepted
        stats.quarantined += done.quarantined
        stats.resources += done.resources
        stats.with_warnings += done.with_warnings
        if done.patients and self.on_patients is not None:
            with self._one_writer():  # matching writes the client index
                self.on_patients(done.patients)
        return done.reasons


def _batches(messages: Iterable[SourceMessage], size: int) -> Iterator[list[SourceMessage]]:
    batch: list[SourceMessage] = []
    for message in messages:
        batch.append(message)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def default_workers() -> int:
    return max(1, (os.cpu_count() or 1))
