"""Concurrent appends, from threads and from separate processes, keep one valid chain."""

from __future__ import annotations

import itertools
import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from audit_support import append_many, event, pem
from sqlalchemy.engine import Engine

from unified_record.audit import AuditLog, AuditSigner, AuditWriteError, verify_audit_log

THREADS, PER_THREAD = 8, 25
PROCESSES, PER_PROCESS = 3, 100
REQUESTS = 20


def _check(engine: Engine, signer: AuditSigner, expected: int) -> None:
    report = verify_audit_log(engine, {signer.key_id: signer.public_key})
    assert report.ok, report.summary()
    assert report.entries == report.head_seq == expected
    assert report.checkpoints >= expected // 7


def test_threads_append_without_forking_the_chain(engine: Engine, signer: AuditSigner
                                                  ) -> None:
    log = AuditLog(engine, signer, checkpoint_every=7)

    def work(worker: int) -> list[int]:
        return [log.append(event(worker * 1000 + n)).seq for n in range(PER_THREAD)]

    with ThreadPoolExecutor(THREADS) as pool:
        seqs = [seq for batch in pool.map(work, range(THREADS)) for seq in batch]
    assert sorted(seqs) == list(range(1, THREADS * PER_THREAD + 1))
    _check(engine, signer, THREADS * PER_THREAD)


def test_processes_append_without_forking_the_chain(database_url: str, engine: Engine,
                                                    signer: AuditSigner) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    workers = [context.Process(target=append_many,
                               args=(database_url, pem(signer), PER_PROCESS, str(n), barrier))
               for n in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=180)
        assert worker.exitcode == 0
    _check(engine, signer, PROCESSES * PER_PROCESS)
    writers = [r.client_id[1] for r in AuditLog(engine, signer).entries() if r.client_id]
    switches = sum(a != b for a, b in itertools.pairwise(writers))
    assert switches > PROCESSES, "the processes did not append at the same time"


def test_appends_that_wait_for_the_chain_head_are_written_together(
        engine: Engine, signer: AuditSigner) -> None:
    """While the chain head is locked (a slow commit, say), requests' appends queue; when it
    is free they are written in one transaction, not one after another: few commits, every
    request answered, one valid chain."""
    log = AuditLog(engine, signer, checkpoint_every=7)
    log.append(event(0))  # the writer is running
    commits: list[int] = []

    def count(_conn: object) -> None:
        commits.append(1)

    sa.event.listen(engine, "commit", count)
    try:
        with engine.connect() as blocker, ThreadPoolExecutor(REQUESTS) as pool:
            blocker.execute(sa.text("UPDATE audit_chain_head SET seq = seq WHERE id = 1"))
            answers = [pool.submit(log.append_many, [event(n)]) for n in range(1, REQUESTS + 1)]
            time.sleep(0.5)  # every request is waiting now
            blocker.rollback()
            seqs = [answer.result(timeout=60)[0].seq for answer in answers]
    finally:
        sa.event.remove(engine, "commit", count)
    assert sorted(seqs) == list(range(2, REQUESTS + 2))
    assert len(commits) <= 3, f"{len(commits)} commits for {REQUESTS} appends"
    _check(engine, signer, REQUESTS + 1)


def test_one_bad_append_fails_only_its_own_request(engine: Engine, signer: AuditSigner
                                                   ) -> None:
    log = AuditLog(engine, signer)
    broken = {"resourceType": "AuditEvent", "id": "no-recorded-time"}
    with engine.connect() as blocker, ThreadPoolExecutor(3) as pool:
        blocker.execute(sa.text("UPDATE audit_chain_head SET seq = seq WHERE id = 1"))
        good = [pool.submit(log.append_many, [event(n)]) for n in (1, 2)]
        bad = pool.submit(log.append_many, [broken])
        time.sleep(0.3)  # all three wait, to be written as one batch
        blocker.rollback()
        assert sorted(g.result(timeout=60)[0].seq for g in good) == [1, 2]
        with pytest.raises(AuditWriteError):
            bad.result(timeout=60)
    _check(engine, signer, 2)
