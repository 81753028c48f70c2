"""What the prepare workers hand to the main process, and the collector settings of a bulk
ingest: choices made for throughput that must not change what is stored."""

from __future__ import annotations

import gc
import hashlib
import hmac
import itertools
import pickle
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from ingest_support import MAPPINGS, SAMPLE, make_keys

from unified_record.ingest import Pipeline, load_mappings
from unified_record.ingest import pipeline as pipeline_module
from unified_record.ingest.mapping import ID_NAMESPACE, resource_id
from unified_record.ingest.pipeline import GC_THRESHOLDS, _sealed, fewer_collections
from unified_record.ingest.prepare import prepare
from unified_record.ingest.sources import iter_messages
from unified_record.store import batch as batch_module
from unified_record.store.models import InboundMessage


@pytest.mark.parametrize("feed", ["council_adult_social_care", "acute_adt", "gp_fhir"])
def test_a_sealed_message_crosses_to_the_main_process_without_its_bodies(feed: str) -> None:
    keyring, blind_index = make_keys()
    mapping = load_mappings(MAPPINGS)[feed]
    for message in itertools.islice(iter_messages(mapping.format, SAMPLE / feed), 5):
        plain = prepare(mapping, message.raw)
        assert plain.error is None and plain.resources
        bodies = [item.resource for item in plain.resources]
        sealed = _sealed(prepare(mapping, message.raw), keyring, blind_index)
        sent = pickle.dumps(sealed)
        for item, body in zip(sealed.resources, bodies, strict=True):
            assert body is not None and item.sealed is not None
            assert item.resource is None and item.index == [], "the envelope holds them"
            assert (item.resource_type, item.id) == (body["resourceType"], body["id"])
            opened = item.body(keyring)
            assert opened["meta"]["versionId"] == "1"
            assert {k: v for k, v in opened.items() if k != "meta"} == {
                k: v for k, v in body.items() if k != "meta"}
            for name in body.get("name") or []:
                if len(name.get("family") or "") > 3:
                    assert name["family"].encode() not in sent


def test_the_resources_of_one_message_share_one_last_updated(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Sealed in advance, a message's resources are stamped once, as one transaction would
    stamp them, and each message at its own time (a clock that ticks at every reading)."""
    ticks = itertools.count()
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def clock() -> datetime:
        return start + timedelta(milliseconds=next(ticks))

    monkeypatch.setattr(pipeline_module, "_now", clock)
    monkeypatch.setattr(batch_module, "_now", clock)
    keyring, blind_index = make_keys()
    mapping = load_mappings(MAPPINGS)["gp_fhir"]
    messages = list(itertools.islice(iter_messages(mapping.format, SAMPLE / "gp_fhir"), 2))
    stamps = []
    for message in messages:
        sealed = _sealed(prepare(mapping, message.raw), keyring, blind_index)
        assert len(sealed.resources) > 1
        times = {item.body(keyring)["meta"]["lastUpdated"] for item in sealed.resources}
        assert {item.sealed.last_updated for item in sealed.resources if item.sealed} == {
            datetime.fromisoformat(t) for t in times}
        assert len(times) == 1
        stamps.append(times.pop())
    assert stamps[0] < stamps[1]


def _thresholds_while_ingesting(pipeline: Pipeline) -> list[tuple[int, int, int]]:
    seen: list[tuple[int, int, int]] = []
    pipeline.ingest_path("council_childrens_social_care",
                         SAMPLE / "council_childrens_social_care",
                         on_messages=lambda _n: seen.append(gc.get_threshold()))
    return seen


def test_a_bulk_ingest_collects_garbage_less_often_and_restores_the_setting(
        database_url: str) -> None:
    keyring, blind_index = make_keys()
    before = gc.get_threshold()
    with Pipeline(database_url, keyring, blind_index, MAPPINGS, workers=2, batch_size=20) as p:
        seen = _thresholds_while_ingesting(p)
        assert seen and all(t[0] >= GC_THRESHOLDS[0] for t in seen)
        assert gc.get_threshold() == before
        assert p._pool is not None
        workers = {p._pool.submit(gc.get_threshold).result() for _ in range(4)}
        assert workers == {GC_THRESHOLDS}, "each worker, for its whole life"
    p.engine.dispose()


def test_fewer_collections_nests_and_restores() -> None:
    before = gc.get_threshold()
    with fewer_collections():
        with fewer_collections():
            assert gc.get_threshold()[0] >= GC_THRESHOLDS[0]
        assert gc.get_threshold()[0] >= GC_THRESHOLDS[0], "still inside the outer one"
    assert gc.get_threshold() == before


@given(st.text(max_size=80), st.text(max_size=80))
def test_resource_ids_are_the_uuid5_of_feed_type_and_key(resource_type: str, key: str) -> None:
    assert resource_id("gp_fhir", resource_type, key) == str(
        uuid.uuid5(ID_NAMESPACE, f"gp_fhir|{resource_type}|{key}"))


def test_the_blind_index_reaches_the_workers_intact() -> None:
    _keyring, blind_index = make_keys()
    copied = pickle.loads(pickle.dumps(blind_index))
    for kind, value in [("family", "SMITH"), ("given", "ZOË"), ("postcode", "")]:
        expected = hmac.new(blind_index._key, f"{kind}\x1f{value}".encode(),
                            hashlib.sha256).hexdigest()
        assert blind_index.digest(kind, value) == copied.digest(kind, value) == expected


def test_a_dataset_flows_from_feed_to_feed_without_draining(database_url: str,
                                                             tmp_path: Path) -> None:
    """The next feed is read and handed to the workers while the previous feed's last batch
    is still to be stored; everything ends stored, as feed by feed."""
    root = tmp_path / "dataset"
    for feed in ("community_health", "council_childrens_social_care"):
        shutil.copytree(SAMPLE / feed, root / feed)
    keyring, blind_index = make_keys()
    pending_at_start: dict[str, int] = {}
    with Pipeline(database_url, keyring, blind_index, MAPPINGS, workers=1, batch_size=7) as p:

        def on_feed(feed: str) -> None:
            with p.engine.connect() as conn:
                pending_at_start[feed] = int(conn.execute(
                    sa.select(sa.func.count()).select_from(InboundMessage)
                    .where(InboundMessage.status == "pending")).scalar_one())

        results = p.ingest_dataset(root, on_feed=on_feed)
        with p.engine.connect() as conn:
            statuses = set(conn.execute(sa.select(InboundMessage.status)).scalars())
    p.engine.dispose()
    assert pending_at_start["community_health"] == 0
    assert pending_at_start["council_childrens_social_care"] > 0, "the last batch in flight"
    assert statuses == {"accepted"}
    assert all(r.accepted == r.messages > 0 for r in results.values())
