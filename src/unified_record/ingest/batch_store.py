"""Storing a prepared batch: its resources and its messages' outcomes in one transaction.

The main process stores with one `BatchStore`. During a bulk ingest with a worker pool,
each worker has its own and stores the batches it prepared, so that the results need not be
pickled back and the storing runs on both cores; `Turns` keeps the batches' order (a later
HL7 update of a person never lands before an earlier one) and lets one writer at a time
into SQLite.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import synchronize
from multiprocessing.context import BaseContext
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from unified_record.fhir.validation import validate_resource
from unified_record.ingest.mapping import resource_id
from unified_record.ingest.prepare import Prepared
from unified_record.ingest.search_values import index_values
from unified_record.security import BlindIndex, KeyRing
from unified_record.store import SourceConflictError, UnitOfWork
from unified_record.store.batch import ResourceBatch, mark_messages

# Resources whose committed version and content digest a store remembers, so that one
# arriving again unchanged (an HL7 update that changes nothing of it; at 100,000 people most
# of the 125,000 resources that arrive again) is not decrypted and parsed twice to see that.
# About 300 bytes each, so at most about 60 MB; past it the memory starts again.
KNOWN_RESOURCES = 200_000


@dataclass
class StoredBatch:
    """What storing a batch did: its counts, a reason or warning per message, and the ids
    of the Patients it stored (new or changed)."""

    accepted: int = 0
    quarantined: int = 0
    resources: int = 0
    with_warnings: int = 0
    reasons: list[str | None] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)


class BatchStore:
    """Stores prepared batches; a message that cannot be stored is quarantined alone (its
    puts are undone) and the others go on."""

    def __init__(self, sessions: sessionmaker[Session], keyring: KeyRing,
                 blind_index: BlindIndex) -> None:
        self.sessions = sessions
        self.keyring = keyring
        self.blind_index = blind_index
        self._known: dict[tuple[str, str], tuple[int, bytes]] = {}  # see ResourceBatch

    def store(self, feed: str, message_ids: list[str], results: list[Prepared]) -> StoredBatch:
        done = StoredBatch()
        outcomes: list[tuple[str, str, str | None]] = []
        with UnitOfWork(self.sessions, self.keyring, self.blind_index) as uow:
            batch = ResourceBatch(uow.session, self.keyring, self.blind_index, self._known)
            batch.load(*_keys_of(feed, results))
            for message_id, prep in zip(message_ids, results, strict=True):
                reason = prep.error
                if reason is None:
                    mark = batch.checkpoint()
                    try:
                        self._store_resources(batch, feed, message_id, prep)
                    except (SourceConflictError, ValueError) as exc:
                        batch.rollback_to(mark)
                        reason = f"not stored: {exc}"
                if reason is not None:
                    outcomes.append((message_id, "quarantined", reason))
                    done.quarantined += 1
                    done.reasons.append(reason)
                    continue
                done.patients += [r.id for r in prep.resources if r.resource_type == "Patient"]
                warning = "; ".join(prep.warnings) or None
                outcomes.append((message_id, "accepted", warning))
                done.accepted += 1
                done.resources += len(prep.resources)
                done.with_warnings += bool(warning)
                done.reasons.append(warning)
            batch.flush()
            mark_messages(uow.session, outcomes)
            uow.commit()
        if len(self._known) > KNOWN_RESOURCES:
            self._known.clear()
        self._known.update(batch.committed)
        return done

    def _store_resources(self, batch: ResourceBatch, feed: str, message_id: str,
                         prep: Prepared) -> None:
        retired_id = None
        if prep.retired_record_id:
            retired_id = resource_id(feed, "Patient", prep.retired_record_id)
        for item in prep.resources:
            if item.resource_type == "Patient":
                current = batch.get("Patient", item.id)
                merging = retired_id is not None and retired_id != item.id
                if merging or (current and current.get("link")):
                    body = _with_links(copy.deepcopy(item.body(self.keyring)), current)
                    if retired_id and merging:
                        _add_link(body, retired_id, "replaces")
                        self._retire(batch, feed, message_id, prep, retired_id, body["id"])
                    validate_resource(body)  # changed since prepare validated it
                    batch.put(body, source_feed=feed, source_org=prep.source_org,
                              source_record_id=item.source_record_id,
                              inbound_message_id=message_id, security_labels=item.labels,
                              index_values=index_values(body))
                    continue
            if item.sealed is not None:
                batch.put_sealed(item.sealed, source_feed=feed, source_org=prep.source_org,
                                 source_record_id=item.source_record_id,
                                 inbound_message_id=message_id)
            else:  # could not be sealed: put refuses it with the reason
                assert item.resource is not None
                batch.put(item.resource, source_feed=feed, source_org=prep.source_org,
                          source_record_id=item.source_record_id, inbound_message_id=message_id,
                          security_labels=item.labels, index_values=item.index)

    def _retire(self, batch: ResourceBatch, feed: str, message_id: str, prep: Prepared,
                retired_id: str, surviving_id: str) -> None:
        """An A40 merge: the retired record points to the surviving one (`replaced-by`)."""
        current = batch.get("Patient", retired_id)
        body: dict[str, Any] = dict(current) if current else {"resourceType": "Patient",
                                                              "id": retired_id}
        body["active"] = False
        _add_link(body, surviving_id, "replaced-by")
        validate_resource(body)
        batch.put(body, source_feed=feed, source_org=prep.source_org,
                  source_record_id=prep.retired_record_id, inbound_message_id=message_id,
                  index_values=index_values(body))


class EarlierBatchFailed(RuntimeError):
    """A batch before this one could not be stored: storing later ones would reorder them."""


class Turns:
    """Batches numbered in the order they were handed out, stored in that order, one writer
    at a time (shared by the processes of a pool: made from the pool's context)."""

    FAILED = -1

    def __init__(self, context: BaseContext) -> None:
        self.lock: synchronize.Lock = context.Lock()  # held by whoever writes
        self.next: Any = context.Value("q", 0, lock=False)  # the number whose turn it is

    def fail(self) -> None:
        """No batch is stored any more: those waiting for their turn raise. Waits for a
        store under way to end, but not for a lock whose holder died."""
        held = self.lock.acquire(timeout=60)
        self.next.value = self.FAILED
        if held:
            self.lock.release()

    def store_in_turn(self, number: int, store: Callable[[], StoredBatch]) -> StoredBatch:
        """Wait for batch `number`'s turn, then run `store` holding the write lock."""
        delay = 0.0005
        while True:
            with self.lock:
                if self.next.value == number:
                    try:
                        done = store()
                    except BaseException:
                        self.next.value = self.FAILED
                        raise
                    if self.next.value == number:  # not failed meanwhile by a lock-less fail()
                        self.next.value = number + 1
                    return done
                if self.next.value == self.FAILED:
                    raise EarlierBatchFailed(f"a batch before batch {number} was not stored")
            time.sleep(delay)
            delay = min(delay * 2, 0.01)


def _keys_of(feed: str, results: list[Prepared]) -> tuple[list[tuple[str, str]],
                                                         list[tuple[str, str, str]]]:
    """What a batch will read: each resource by id and by source record, and merged ids."""
    keys, sources = [], []
    for prep in results:
        for item in prep.resources:
            keys.append((item.resource_type, item.id))
            sources.append((item.resource_type, feed, item.source_record_id))
        if prep.retired_record_id:
            keys.append(("Patient", resource_id(feed, "Patient", prep.retired_record_id)))
            sources.append(("Patient", feed, prep.retired_record_id))
    return keys, sources


def _add_link(body: dict[str, Any], other_id: str, link_type: str) -> None:
    links = body.setdefault("link", [])
    ref = f"Patient/{other_id}"
    if not any(link.get("other", {}).get("reference") == ref for link in links):
        links.append({"other": {"reference": ref}, "type": link_type})


def _with_links(body: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    """Links made by merges belong to the integration, not the sender: carry them forward."""
    if not current or not current.get("link"):
        return body
    merged = dict(body)
    for link in current["link"]:
        _add_link(merged, link["other"]["reference"].split("/", 1)[1], link["type"])
    return merged
