from __future__ import annotations

import sys
from pathlib import Path

import pytest

from unified_record.synthetic import generate_dataset, load_profile
from unified_record.synthetic.population import CHUNK_SIZE, Person, build_chunk

sys.path.insert(0, str(Path(__file__).parent))
from feed_reader import Record, read_all

POPULATION = 20_000
SEED = 2026


@pytest.fixture(scope="session")
def dataset_20k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20,000-person dataset with the default profile, generated once per worker."""
    out = tmp_path_factory.mktemp("ds") / "ds20k"
    generate_dataset(POPULATION, SEED, out, load_profile(), workers=1)
    return out


@pytest.fixture(scope="session")
def records_20k(dataset_20k: Path) -> list[Record]:
    """Every source person record of dataset_20k, as an outside reader parses it."""
    return read_all(dataset_20k)


@pytest.fixture(scope="session")
def true_people() -> dict[str, Person]:
    """The hidden true population behind dataset_20k (evaluation only)."""
    profile = load_profile()
    people: dict[str, Person] = {}
    for chunk in range((POPULATION + CHUNK_SIZE - 1) // CHUNK_SIZE):
        count = min(CHUNK_SIZE, POPULATION - chunk * CHUNK_SIZE)
        for person in build_chunk(SEED, chunk, count, profile, POPULATION):
            people[person.person_id] = person
    return people
