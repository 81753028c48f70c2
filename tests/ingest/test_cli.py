"""The ingest commands as an operator uses them: ingest, quarantine, replay, keys rotate."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from cli_support import run
from ingest_support import MAPPINGS, SAMPLE

from unified_record.cli import RateColumn

HEADER = ("Local Patient ID,NHS No,Patient Name,DOB,Gender,Address,Post Code,Telephone,"
          "Provider Code,Team,Referral Date,Discharge Date,Referral Reason\n")
GOOD = "RX1,,\"SMITH, Ann\",02-Jan-1980,2,\"1 A St, Leeds\",LS1 1AA,,RZ2,Community Nursing,"\
       "01-Feb-2024,,Wound care\n"
BAD_DATE = "RX2,,\"JONES, Bob\",31-Feb-1980,1,\"2 B St, Leeds\",LS1 1AB,,RZ2,Community Nursing,"\
           "01-Feb-2024,,Wound care\n"


def test_ingest_quarantine_fix_mapping_replay(env: Path) -> None:
    feed_file = env / "referrals.csv"
    feed_file.write_text(HEADER + GOOD + BAD_DATE)
    code, out = run("ingest", "--feed", "community_health", str(feed_file), "--workers", "1")
    assert code == 0, out
    assert "community_health" in out and "1 message(s) quarantined" in out

    code, out = run("quarantine")
    assert code == 0
    (line,) = [x for x in out.splitlines() if x.startswith("community_health")]
    assert line.split("\t")[:2] == ["community_health", "referrals.csv:3"]
    assert "DOB" in line and "JONES" not in line and "31-Feb" not in line

    # The analyst decides impossible dates are dropped with a warning, then replays.
    mappings = env / "mappings"
    shutil.copytree(MAPPINGS, mappings)
    mapping = mappings / "community_health.yaml"
    text = mapping.read_text()
    old = 'birthDate: {$: DOB, transform: [{date: "%d-%b-%Y"}]}'
    assert old in text
    mapping.write_text(text.replace(old, old[:-1] + ", on_error: drop}"))
    code, out = run("replay", "--mappings", str(mappings))
    assert code == 0, out
    assert "community_health" in out
    code, out = run("quarantine")
    assert "0 quarantined message(s)" in out


def test_ingest_a_dataset_then_rotate_keys(env: Path) -> None:
    dataset = env / "ds"
    shutil.copytree(SAMPLE, dataset)
    code, out = run("ingest", str(dataset), "--workers", "1", "--quiet")
    assert code == 0, out
    code, out = run("keys", "rotate")
    assert code == 0, out
    assert "re-encrypted" in out
    code, out = run("ingest", str(dataset), "--workers", "1")
    assert code == 0, out
    total = next(line for line in out.splitlines() if "total" in line)
    cells = [c.strip().replace(",", "") for c in total.split("│") if c.strip()]
    _, messages, accepted, quarantined, duplicates = cells[:5]
    assert accepted == quarantined == "0" and duplicates == messages != "0", \
        "after rotation the store still recognises every message"


@pytest.mark.parametrize(("args", "message"), [
    (["ingest", "/no/such/folder"], "/no/such/folder: no such file or folder"),
    (["ingest", "--feed", "no_such_feed", "."], "no mapping for feed 'no_such_feed'"),
    (["ingest", "{env}/ds"], "no mapping for sub-folder(s) ['var_feed']"),
])
def test_bad_ingest_requests_exit_2_with_one_line(env: Path, args: list[str],
                                                  message: str) -> None:
    (env / "ds" / "var_feed").mkdir(parents=True)
    code, out = run(*(a.format(env=env) for a in args))
    assert code == 2
    assert out.startswith("error: ") and message in out and out.count("\n") == 1


def test_progress_shows_records_per_second() -> None:
    column = RateColumn()
    assert column.render(SimpleNamespace(finished_speed=None, speed=None)).plain == \
        "- records/s"  # type: ignore[arg-type]
    assert column.render(SimpleNamespace(finished_speed=None, speed=1234.4)).plain == \
        "1,234 records/s"  # type: ignore[arg-type]
