"""The same flow over real HTTP: uvicorn on a loopback port, in a thread (with the probe
routes) and as `unified-record serve` with two worker processes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from api_support import (
    assertion,
    bearer,
    es384_key,
    public_jwks,
    rs384_key,
    token_form,
    with_probes,
)
from cli_support import run
from joserfc.jwk import ECKey, RSAKey
from serving_support import free_socket, serving

from unified_record.api import create_app
from unified_record.config import Settings
from unified_record.store import OAuthClient


@pytest.fixture
def served(settings: Settings) -> Iterator[str]:
    """uvicorn serving the app (and probe routes) in a thread on a free loopback port."""
    sock, base = free_socket()
    app = with_probes(create_app(settings.model_copy(update={"public_url": base})))
    with serving(app, sock):
        yield base


def test_backend_services_over_http(served: str, partner: OAuthClient, es_key: ECKey,
                                    rs_key: RSAKey) -> None:
    token_url = f"{served}/oauth/token"
    with httpx2.Client(base_url=served, timeout=10) as http:
        smart = http.get("/fhir/.well-known/smart-configuration").json()
        assert smart["token_endpoint"] == token_url
        for key in (es_key, rs_key):
            signed = assertion(key, partner.client_id, token_url=token_url)
            response = http.post(smart["token_endpoint"], data=token_form(signed))
            assert response.status_code == 200, response.text
            token = response.json()["access_token"]
            probe = http.get("/fhir/_probe/patient", headers=bearer(token))
            assert probe.status_code == 200 and probe.json()["organisation"] == "A81001"
            replay = http.post(token_url, data=token_form(signed))
            assert replay.status_code == 400 and replay.json()["error"] == "invalid_client"

        metadata = http.get("/fhir/metadata", headers={"Accept": "application/fhir+json"})
        assert metadata.status_code == 200
        assert metadata.headers["content-type"].startswith("application/fhir+json")
        assert metadata.json()["resourceType"] == "CapabilityStatement"

        missing = http.get("/fhir/_probe/patient")
        assert missing.status_code == 401 and missing.headers["www-authenticate"]
        narrow = http.post(token_url, data=token_form(
            assertion(es_key, partner.client_id, token_url=token_url), "system/Observation.rs"))
        forbidden = http.get("/fhir/_probe/patient",
                             headers=bearer(narrow.json()["access_token"]))
        assert forbidden.status_code == 403
        assert forbidden.json()["resourceType"] == "OperationOutcome"
        boom = http.get("/fhir/_probe/boom")
        assert boom.status_code == 500 and "9434765919" not in boom.text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_serve_command_with_two_workers(env: Path, tmp_path: Path) -> None:
    key_es, key_rs = es384_key(), rs384_key()
    jwks_file = tmp_path / "partner.jwks.json"
    jwks_file.write_text(json.dumps(public_jwks(key_es, key_rs)))
    code, out = run("clients", "add", "--name", "Partner", "--jwks-file", str(jwks_file),
                    "--scope", "system/*.rs", "--org", "RR8", "--role", "acute-epr")
    assert code == 0, out
    client_id = out.strip().splitlines()[-1]

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    environment = {**os.environ, "UR_HOST": "127.0.0.1", "UR_PORT": str(port),
                   "UR_WORKERS": "2", "UR_KEEP_ALIVE_SECONDS": "1"}
    environment.pop("UR_PUBLIC_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "unified_record", "serve"],
                               env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        with httpx2.Client(base_url=base, timeout=10) as http:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "serve did not answer"
                try:
                    if http.get("/fhir/metadata").status_code == 200:
                        break
                except httpx2.TransportError:
                    time.sleep(0.2)
            # Each request may land on either worker: the jti rule holds across both.
            for key in (key_es, key_rs, key_es, key_rs):
                signed = assertion(key, client_id, token_url=f"{base}/oauth/token")
                first = http.post("/oauth/token", data=token_form(signed, "system/Patient.rs"))
                assert first.status_code == 200, first.text
                assert first.json()["scope"] == "system/Patient.rs"
                again = http.post("/oauth/token", data=token_form(signed, "system/Patient.rs"))
                assert again.status_code == 400
            assert http.get("/oauth/jwks").json()["keys"][0]["alg"] == "ES256"
        # An idle keep-alive connection is closed after UR_KEEP_ALIVE_SECONDS (uvicorn's
        # own default is 5 s).
        assert _idle_connection_lasts(port) < 3
    finally:
        process.terminate()
        try:
            out, err = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
    assert f"serving {base}/fhir" in out
    assert "Traceback" not in err


def _idle_connection_lasts(port: int) -> float:
    """Seconds from a keep-alive response to the server closing the idle connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += conn.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        found = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
        assert found, head
        length = int(found.group(1))
        while len(body) < length:
            body += conn.recv(65536)
        idle = time.monotonic()
        assert conn.recv(1) == b"", "the server answered nothing more and then closed"
        return time.monotonic() - idle
