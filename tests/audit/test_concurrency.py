"""Concurrent appends, from threads and from separate processes, keep one valid chain."""

from __future__ import annotations

import itertools
import multiprocessing
from concurrent.futures import ThreadPoolExecutor

from audit_support import append_many, event, pem
from sqlalchemy.engine import Engine

from unified_record.audit import AuditLog, AuditSigner, verify_audit_log

THREADS, PER_THREAD = 8, 25
PROCESSES, PER_PROCESS = 3, 100


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
