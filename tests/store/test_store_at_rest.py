"""No plaintext at rest: the SQLite file (and its write-ahead log) never holds personal data."""

from __future__ import annotations

from pathlib import Path

from store_support import FAMILY, NHS_NUMBER, POSTCODE, patient, provenance

from unified_record.security import BlindIndex, KeyRing
from unified_record.store import UnitOfWork, make_engine, migrate

SECRETS = [NHS_NUMBER, FAMILY, FAMILY.upper(), "Ermintrude", POSTCODE, POSTCODE.replace(" ", "")]


def database_bytes(path: Path) -> bytes:
    files = [path, path.with_name(path.name + "-wal")]
    return b"".join(f.read_bytes() for f in files if f.exists())


def assert_no_secrets(data: bytes) -> None:
    for secret in SECRETS:
        for encoded in (secret.encode("utf-8"), secret.encode("utf-16-le")):
            assert encoded not in data, f"{secret!r} found in the database files"


def test_no_plaintext_in_the_database_files(
    tmp_path: Path, cipher: KeyRing, blind_index: BlindIndex
) -> None:
    path = tmp_path / "at-rest.db"
    url = f"sqlite:///{path}"
    migrate(url)
    engine = make_engine(url)
    raw = f"{NHS_NUMBER},{FAMILY},Ermintrude,1950-02-03,{POSTCODE}\n".encode()
    index = [("identifier", NHS_NUMBER), ("name", FAMILY.upper()), ("postcode", "ZZ993QX")]
    with UnitOfWork(engine, cipher, blind_index) as uow:
        message, _ = uow.messages.add("council_asc", raw, "clients.csv:2", "ROW-2")
        put = uow.resources.put
        put(patient(), **provenance(), inbound_message_id=message.id, index_values=index)
        put(patient(gender="female"), **provenance(), index_values=index)
        uow.commit()
        assert uow.resources.search("Patient", "identifier", NHS_NUMBER) == ["p1"]

    live = database_bytes(path)  # the WAL still holds the latest pages
    assert b"council_asc" in live  # control: non-personal provenance is stored in clear
    assert_no_secrets(live)

    engine.dispose()  # the last connection closing checkpoints the WAL into the file
    settled = database_bytes(path)
    assert b"council_asc" in settled
    assert_no_secrets(settled)
