"""`unified-record demo`: generate, ingest, link, evaluate, then serve with a demo partner
system whose token was obtained over HTTP the SMART Backend Services way."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_demo_runs_end_to_end_and_hands_out_a_working_token(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "UR_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
           "UR_DATA_DIR": str(tmp_path / "var"), "UR_PORT": str(port)}
    env.pop("UR_PUBLIC_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "unified_record", "demo", "--people", "150",
         "--out", str(tmp_path / "feeds"), "--no-serve"],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "accepted" in out and "auto-link" in out  # ingest and evaluation tables
    assert f"http://127.0.0.1:{port}/fhir" in out
    token = next(line.split("=", 1)[1] for line in out.splitlines()
                 if line.startswith("TOKEN="))
    assert token.count(".") == 2  # a signed JWT from the token endpoint
    assert "$everything" in out and "curl" in out
    key = tmp_path / "var" / "demo-partner-key.json"
    assert key.stat().st_mode & 0o777 == 0o600
