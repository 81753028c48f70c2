"""Benchmark: what consent and audit cost per request, inside one process (issue 7).

`bench/api_load.py` measures latency under load, where two workers, PostgreSQL and the load
generator share two cores and runs of the same code vary up to twice. This one times the
same two requests one after another in process (Starlette's TestClient, no network), with
consent and audit on and off for the same request back to back (in random order), so that
a machine whose speed drifts (this one's does, by up to twice) cannot favour either mode,
and the difference is the cost of the consent engine, the withheld notice and the audit
entry and little else.

    export UR_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/ur_api_bench
    export UR_DATA_DIR=/tmp/apibench/var            # the population of bench/api_load.py
    .venv/bin/python bench/api_inprocess.py [--pairs 2000] [--mode on|off]

Prints, per request kind, the median and mean time of each mode and their ratio. The
TestClient's own overhead (about 1 ms) is in both modes, so the ratio here understates what
consent adds to a server's own time a little; the difference in milliseconds is exact.
To see where one mode's time goes: `py-spy record -o on.svg -- .venv/bin/python
bench/api_inprocess.py --mode on` (the app runs in TestClient's event-loop thread, which
py-spy samples with the rest).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from api_load import NHS, register_client, say, token
from fastapi.testclient import TestClient
from serve_unguarded import consent_off

from unified_record.api import create_app

BASE = "http://testserver"


def timed(http: TestClient, urls: list[str]) -> list[float]:
    """Milliseconds per request; any answer but a non-empty 200 Bundle stops the bench."""
    times = []
    for url in urls:
        started = time.perf_counter()
        answer = http.get(url)
        times.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200 or answer.json().get("total", 0) < 1:
            raise SystemExit(f"{url}: HTTP {answer.status_code} {answer.text[:300]}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--sample", type=int, default=500)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--mode", choices=("on", "off", "both"), default="both",
                        help="time one mode only (to profile it with py-spy)")
    args = parser.parse_args()
    url = os.environ.get("UR_DATABASE_URL", "")
    if not url or not os.environ.get("UR_DATA_DIR"):
        raise SystemExit("set UR_DATABASE_URL and UR_DATA_DIR (see the docstring)")
    os.environ["UR_PUBLIC_URL"] = BASE
    with tempfile.TemporaryDirectory() as folder:
        client_id, key = register_client(dict(os.environ), Path(folder))
    app = create_app()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        clients = list(conn.execute(sa.text(
            "SELECT id FROM client WHERE status = 'active' ORDER BY id")).scalars())
    engine.dispose()
    chosen = random.Random(args.seed).sample(clients, min(args.sample, len(clients)))

    with TestClient(app, base_url=BASE) as http:
        access = token(BASE, client_id, key, post=lambda url, data, timeout: http.post(
            url, data=data))
        http.headers.update({"Authorization": f"Bearer {access}",
                             "Accept": "application/fhir+json"})
        numbers = []
        for client in chosen:
            body = http.get(f"/fhir/Patient/{client}").json()
            numbers += [i["value"] for i in body.get("identifier") or []
                        if i.get("system") == NHS][:1]
        kinds: dict[str, list[str]] = {
            "search": [f"/fhir/Patient?identifier={NHS}|{n}" for n in numbers],
            "$everything": [f"/fhir/Patient/{c}/$everything" for c in chosen]}
        rng = random.Random(args.seed)
        for urls in kinds.values():  # read every page once, in both modes
            timed(http, urls)
            with consent_off(app):
                timed(http, urls)

        times: dict[tuple[str, bool], list[float]] = {(k, m): [] for k in kinds
                                                     for m in (True, False)}
        pairs: dict[str, list[float]] = {k: [] for k in kinds}
        modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.mode]
        for number in range(args.pairs):
            for kind, urls in kinds.items():
                url, taken = rng.choice(urls), dict[bool, float]()
                for on in sorted(modes, key=lambda _: rng.random()):  # either first
                    if on:
                        [taken[on]] = timed(http, [url])
                    else:
                        with consent_off(app):
                            [taken[on]] = timed(http, [url])
                    times[kind, on].append(taken[on])
                if len(taken) == 2:
                    pairs[kind].append(taken[True] - taken[False])
            if (number + 1) % 500 == 0:
                say(f"{number + 1:,} of {args.pairs:,} pairs")

    print(f"\n{len(clients):,} active clients; {args.pairs:,} pairs of requests per kind (the "
          "same request with consent and audit on and off, in random order)\n")
    print("| request | on: median / mean ms | off: median / mean ms "
          "| added (median of the pairs' differences), ms | ratio of medians |")
    print("|---|---|---|---|---|")
    for kind in kinds:
        with_, without = times[kind, True] or [math.nan], times[kind, False] or [math.nan]
        m_on, m_off = statistics.median(with_), statistics.median(without)
        added = statistics.median(pairs[kind]) if pairs[kind] else math.nan
        print(f"| {kind} | {m_on:.2f} / {statistics.fmean(with_):.2f} | "
              f"{m_off:.2f} / {statistics.fmean(without):.2f} | {added:.2f} | "
              f"{m_on / m_off:.2f} |")


if __name__ == "__main__":
    main()
