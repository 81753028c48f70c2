"""The committed sample is exactly what its command makes; the CLI rejects bad input cleanly."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

import unified_record.synthetic.generator as generator
from unified_record.synthetic import generate_dataset, load_profile
from unified_record.synthetic.profile import REPO_ROOT

SAMPLE = REPO_ROOT / "synthetic_data" / "sample"
SAMPLE_PEOPLE, SAMPLE_SEED = 500, 7  # the Makefile's `make sample` uses the same


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "unified_record", *args],
                          capture_output=True, text=True, timeout=300, check=False)


def test_committed_sample_is_exactly_what_the_command_produces(tmp_path: Path) -> None:
    result = _cli("generate", "--people", str(SAMPLE_PEOPLE), "--seed", str(SAMPLE_SEED),
                  "--out", str(tmp_path / "sample"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert _digest(SAMPLE) == _digest(tmp_path / "sample"), "run `make sample` and commit"


@pytest.mark.parametrize(("args", "message"), [
    (["--people", "0"], "--people must be between"),
    (["--people", "lots"], "Invalid value for '--people'"),
    (["--seed", "-3"], "--seed must be a non-negative integer"),
    (["--profile", "/nonexistent/profile.yaml"], "cannot read profile"),
])
def test_bad_requests_exit_non_zero_with_one_line(tmp_path: Path, args: list[str],
                                                  message: str) -> None:
    result = _cli("generate", "--out", str(tmp_path / "out"), "--quiet", *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_invalid_profile_names_file_and_field(tmp_path: Path) -> None:
    text = (REPO_ROOT / "synthetic_data" / "profiles" / "default.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("nhs_number_missing: 0.40", "nhs_number_missing: 1.7", 1))
    result = _cli("generate", "--out", str(tmp_path / "out"), "--profile", str(bad), "-q")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(bad) in lines[0]
    assert "feeds.council_adult_social_care.noise.nhs_number_missing" in lines[0]


def test_refuses_to_overwrite_a_folder_that_is_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    result = _cli("generate", "-n", "10", "--out", str(tmp_path), "-q")
    assert result.returncode == 2
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_a_failed_run_leaves_the_previous_dataset_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ds"
    generate_dataset(400, 1, out, load_profile(), workers=1)
    before = _digest(out)

    def broken(ctx: object, people: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setitem(generator.WRITERS, "gp_fhir", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_dataset(600, 2, out, load_profile(), workers=1)
    assert _digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"], "no temporary folder left"


def test_a_good_run_replaces_an_earlier_dataset(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    generate_dataset(400, 1, out, load_profile(), workers=1)
    generate_dataset(300, 2, out, load_profile(), workers=1)
    assert '"people": 300' in (out / "manifest.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
