"""Noise measured in the written feeds of 20,000 people matches the profile's rates."""

from __future__ import annotations

import csv
import math
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path

import pytest
from feed_reader import Record

from unified_record.fhir.nhs_number import is_valid_nhs_number
from unified_record.synthetic import FEEDS, load_profile
from unified_record.synthetic.population import Person
from unified_record.synthetic.reference import NICKNAMES, fold

PROFILE = load_profile()


def within(observed: int, trials: int, rate: float) -> bool:
    """Observed count is within 4 standard deviations (plus a small floor) of the rate."""
    assert trials > 30, "too few trials to measure a rate"
    sd = math.sqrt(max(rate * (1 - rate), 1e-9) / trials)
    return abs(observed / trials - rate) <= 4 * sd + 0.004


@pytest.fixture(scope="module")
def linked(
    dataset_20k: Path, records_20k: list[Record], true_people: dict[str, Person]
) -> list[tuple[Record, Person]]:
    with (dataset_20k / "truth.csv").open() as fh:
        owner = {(r["source"], r["source_record_id"]): r["person_id"] for r in csv.DictReader(fh)}
    return [(r, true_people[owner[(r.source, r.record_id)]]) for r in records_20k]


@pytest.mark.parametrize("feed", FEEDS)
def test_nhs_number_missing_and_typo_rates(feed: str, linked: list[tuple[Record, Person]]) -> None:
    noise = PROFILE.feeds[feed].noise
    pairs = [(r, p) for r, p in linked if r.source == feed and p.nhs_number]
    missing = sum(1 for r, _ in pairs if not r.nhs)
    kept = 1 - noise.nhs_number_missing
    expected_missing = noise.nhs_number_missing + kept * noise.name_dob_only
    assert within(missing, len(pairs), expected_missing), (missing, len(pairs))
    present = [(r, p) for r, p in pairs if r.nhs]
    invalid = [r for r, _ in present if not is_valid_nhs_number(r.nhs)]
    assert within(len(invalid), len(present), noise.nhs_number_typo)
    # A typo is the only way a number differs from the truth, and it always fails modulus 11.
    assert all(not is_valid_nhs_number(r.nhs) for r, p in present if r.nhs != p.nhs_number)


@pytest.mark.parametrize("feed", ["council_adult_social_care", "acute_adt", "community_health",
                                  "gp_fhir"])
def test_nickname_rate(feed: str, linked: list[tuple[Record, Person]]) -> None:
    noise = PROFILE.feeds[feed].noise
    eligible = [(r, p) for r, p in linked if r.source == feed and p.given in NICKNAMES]
    nick = sum(1 for r, p in eligible
               if r.given in {n.lower() for n in NICKNAMES[p.given]})
    # Later noise (first/middle swap, typos) can hide a nickname: allow for it.
    expected = noise.nickname * (1 - noise.first_middle_swap) * (1 - noise.name_typo / 2)
    assert within(nick, len(eligible), expected), (nick, len(eligible), expected)


@pytest.mark.parametrize("feed", FEEDS)
def test_day_month_transposition_rate(feed: str, linked: list[tuple[Record, Person]]) -> None:
    noise = PROFILE.feeds[feed].noise
    eligible = [(r, p) for r, p in linked
                if r.source == feed and p.dob.day <= 12 and p.dob.day != p.dob.month]
    swapped = sum(1 for r, p in eligible if r.dob == date(p.dob.year, p.dob.day, p.dob.month))
    assert within(swapped, len(eligible), noise.dob_day_month_swap)


@pytest.mark.parametrize("feed", ["council_adult_social_care", "community_health", "gp_fhir"])
def test_first_middle_swap_and_old_surname(feed: str, linked: list[tuple[Record, Person]]) -> None:
    noise = PROFILE.feeds[feed].noise
    with_middle = [(r, p) for r, p in linked if r.source == feed and p.middle]
    swapped = sum(1 for r, p in with_middle if r.given == fold(p.middle).lower())
    assert within(swapped, len(with_middle), noise.first_middle_swap * (1 - noise.name_typo / 2))
    married = [(r, p) for r, p in linked if r.source == feed and p.birth_family != p.family]
    old = sum(1 for r, p in married if r.family == fold(p.birth_family).lower())
    assert within(old, len(married), noise.old_surname * (1 - noise.name_typo / 2))


@pytest.mark.parametrize("feed", FEEDS)
def test_duplicate_records_and_name_dob_only(
    feed: str, linked: list[tuple[Record, Person]]
) -> None:
    noise = PROFILE.feeds[feed].noise
    per_person = Counter(p.person_id for r, p in linked if r.source == feed)
    assert within(sum(1 for n in per_person.values() if n == 2), len(per_person),
                  noise.duplicate_record)
    assert max(per_person.values()) <= 2
    if feed != "acute_adt":  # an HL7 PID always carries its MRN; address may be updated
        bare = sum(1 for r, p in linked if r.source == feed and not r.has_address and not r.nhs
                   and p.nhs_number)
        total = sum(1 for r, p in linked if r.source == feed and p.nhs_number)
        assert within(bare, total, noise.name_dob_only)


def test_population_features_exist(true_people: dict[str, Person]) -> None:
    people = list(true_people.values())
    assert sum(p.twin for p in people) > 50
    homes: defaultdict[tuple[str, str], int] = defaultdict(int)
    for p in people:
        if p.care_home:
            homes[(p.address.number, p.address.postcode)] += 1
    assert max(homes.values()) >= 10, "care homes should be shared by many residents"
    assert sum("-" in p.family for p in people) > 50
    assert sum(p.family != p.birth_family for p in people) > 1000
    assert sum(p.previous_address is not None for p in people) > 1500
    surnames = Counter(p.family for p in people)
    assert surnames.most_common(1)[0][1] > 200, "common surnames should be common"
    assert any(fold(p.given) != p.given for p in people), "some names carry diacritics"
    assert len({p.nhs_number for p in people if p.nhs_number}) == sum(
        1 for p in people if p.nhs_number)
