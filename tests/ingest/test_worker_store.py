"""Workers that store what they prepare: in the order the batches were sent, one writer at
a time, and a failed batch stops the ones after it."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path

import pytest
from ingest_support import MAPPINGS, SAMPLE, make_keys

from unified_record.ingest import Pipeline
from unified_record.ingest.batch_store import EarlierBatchFailed, StoredBatch, Turns
from unified_record.ingest.mapping import resource_id
from unified_record.ingest.sources import SourceMessage

FEED = "acute_adt"
MSH = "MSH|^~\\&|PAS|RZ1|UR|COUNCIL|20240101120000||ADT^A08|{control}|P|2.4|||AL|NE|GBR"
PID = ("PID|1||9434765919^^^NHS^NH~K1^^^RZ1^MR||{family}^ANNA^MAY^^MS||19800229|F|||"
       "1 Test Street^^Leeds^^ls1 1aa^GBR^H||0113 496 0000^PRN^PH")
FAMILIES = [f"TESTER{a}{b}" for a in "ABCDE" for b in "ABCDEFGH"]  # 40 distinct names


def update(n: int) -> SourceMessage:
    segments = [MSH.format(control=f"U{n}"), "EVN|A08|20240101120000",
                PID.format(family=FAMILIES[n])]
    return SourceMessage("\r".join(segments).encode(), f"update {n}")


class _NotHere:
    def store(self, *_args: object) -> StoredBatch:
        raise AssertionError("the main process stored a batch the workers should store")


def test_workers_store_the_updates_of_one_person_in_the_order_sent(database_url: str) -> None:
    keyring, blind_index = make_keys()
    with Pipeline(database_url, keyring, blind_index, MAPPINGS, workers=2, batch_size=1) as p:
        p.store = _NotHere()  # type: ignore[assignment]
        stats = p.ingest_messages(FEED, (update(n) for n in range(len(FAMILIES))))
        assert stats.accepted == len(FAMILIES)
        with p.uow() as uow:
            history = uow.resources.history("Patient", resource_id(FEED, "Patient", "K1"))
    p.engine.dispose()
    by_version = sorted(history, key=lambda body: int(body["meta"]["versionId"]))
    assert [body["name"][0]["family"] for body in by_version] == FAMILIES


def test_a_pipeline_closed_and_used_again_starts_its_workers_afresh(database_url: str) -> None:
    keyring, blind_index = make_keys()
    with Pipeline(database_url, keyring, blind_index, MAPPINGS, workers=2, batch_size=5) as p:
        first = p.ingest_path("community_health", SAMPLE / "community_health")
        p.close()
        second = p.ingest_path("council_childrens_social_care",
                               SAMPLE / "council_childrens_social_care")
        assert p._turns is not None and p._numbered > 0
    p.engine.dispose()
    assert first.accepted == first.messages > 0
    assert second.accepted == second.messages > 0


def test_matching_on_ingest_writes_while_no_worker_does(database_url: str) -> None:
    """`on_patients` (the client index's matcher) writes too: on SQLite it runs holding the
    write lock, so it never meets a worker's transaction and SQLite's busy timeout."""
    keyring, blind_index = make_keys()
    held: list[bool] = []
    with Pipeline(database_url, keyring, blind_index, MAPPINGS, workers=2, batch_size=5) as p:

        def on_patients(_ids: list[str]) -> None:
            assert p._turns is not None
            free = p._turns.lock.acquire(block=False)
            if free:
                p._turns.lock.release()
            held.append(not free)

        p.on_patients = on_patients
        p.ingest_path("community_health", SAMPLE / "community_health")
        sqlite = p.engine.dialect.name == "sqlite"
    p.engine.dispose()
    assert held and all(held) == sqlite


def test_a_worker_that_dies_ends_the_wait_for_the_write_lock(tmp_path: Path) -> None:
    keyring, blind_index = make_keys()
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with Pipeline(url, keyring, blind_index, MAPPINGS, workers=2, batch_size=5) as p:
        p.ingest_path("community_health", SAMPLE / "community_health")
        assert p._pool is not None and p._turns is not None
        p._turns.lock.acquire()  # as a worker would hold it
        os.kill(next(iter(p._pool._processes)), signal.SIGKILL)
        try:
            with pytest.raises(BrokenProcessPool), p._one_writer():
                pass
        finally:
            p._turns.lock.release()
    p.engine.dispose()


def test_a_database_in_this_process_only_is_stored_by_this_process() -> None:
    keyring, blind_index = make_keys()
    with Pipeline("sqlite://", keyring, blind_index, MAPPINGS, workers=2, batch_size=5) as p:
        stats = p.ingest_path("community_health", SAMPLE / "community_health")
        assert p._pool is not None and p._turns is None
    p.engine.dispose()
    assert stats.accepted == stats.messages > 0


def _turns() -> Turns:
    return Turns(get_context("forkserver"))


def test_turns_store_in_the_order_given_one_at_a_time() -> None:
    turns = _turns()
    order: list[int] = []
    inside = threading.Semaphore(1)

    def store(number: int) -> StoredBatch:
        assert inside.acquire(blocking=False), "two stores at once"
        time.sleep(random.random() / 500)
        order.append(number)
        inside.release()
        return StoredBatch(accepted=number)

    numbers = list(range(30))
    random.shuffle(numbers)
    done: dict[int, StoredBatch] = {}
    threads = [threading.Thread(target=lambda n=n: done.update(
        {n: turns.store_in_turn(n, lambda: store(n))})) for n in numbers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert order == list(range(30))
    assert all(done[n].accepted == n for n in range(30))


def test_after_a_failed_batch_the_later_ones_are_not_stored() -> None:
    turns = _turns()
    stored: list[int] = []

    def fails() -> StoredBatch:
        raise ValueError("disk full")

    with pytest.raises(ValueError, match="disk full"):
        turns.store_in_turn(0, fails)
    def stores() -> StoredBatch:
        stored.append(1)
        return StoredBatch()

    with pytest.raises(EarlierBatchFailed):
        turns.store_in_turn(1, stores)
    assert stored == []


def test_closing_ends_the_waits_for_turns_that_will_not_come() -> None:
    turns = _turns()
    raised: list[BaseException] = []

    def wait_for_a_later_turn() -> None:
        try:
            turns.store_in_turn(3, StoredBatch)
        except EarlierBatchFailed as exc:
            raised.append(exc)

    waiter = threading.Thread(target=wait_for_a_later_turn)
    waiter.start()
    time.sleep(0.05)
    turns.fail()
    waiter.join(5)
    assert not waiter.is_alive() and len(raised) == 1


def test_workers_are_forked_from_a_server_that_loaded_the_pipeline(database_url: str) -> None:
    """The fork server imports the pipeline (and so fhir.resources' pydantic core and
    orjson) once; each worker starts with them loaded instead of importing them again."""
    keyring, blind_index = make_keys()
    with Pipeline(database_url, keyring, blind_index, MAPPINGS, workers=2, batch_size=5) as p:
        p.ingest_path("community_health", SAMPLE / "community_health")
        assert p._pool is not None
        server = p._pool.submit(os.getppid).result()
        loaded = Path(f"/proc/{server}/maps").read_text()
    p.engine.dispose()
    assert server != os.getpid()
    assert "pydantic_core" in loaded and "orjson" in loaded
