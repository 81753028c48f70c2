"""Benchmark: the FHIR API under load, `unified-record serve` with 2 workers on PostgreSQL.

    # once: a 100,000-person population in its own database (several minutes)
    export UR_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/ur_api_bench
    export UR_DATA_DIR=/tmp/apibench/var
    unified-record generate --people 100000 --out /tmp/apibench/ds100k
    unified-record ingest /tmp/apibench/ds100k
    unified-record link
    # then, as often as wanted (reuses that database; starts and stops the server itself)
    .venv/bin/python bench/api_load.py --consent both --rounds 6 \
        --plot docs/api-latency.svg                                 # issues 6 and 7
    .venv/bin/python bench/api_load.py --think-time 0       # closed loop: the ceiling

Two scenarios, one after the other, each against a freshly started server after one
untimed pass over its distinct requests and a short warm-up:
`GET /fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|N` (N drawn from
the NHS numbers of real clients) and `GET /fhir/Patient/{client}/$everything` (client ids
drawn from the index). Targets (issue 6): p95 < 50 ms for the search and < 150 ms for
$everything, 0 errors. A response counts as an error unless it is 200 with a Bundle whose
total is at least 1 (an NHS-number search that found nobody would be fast and wrong).
Issue 7: with consent and audit on, within 20% of the figures without them; `--consent
off` serves the same app with the consent engine, the withheld notice and the audit log
taken out (bench/serve_unguarded.py, kept out of the package so that the service itself has
no such switch). This machine's speed drifts by up to twice within minutes, so one run of
each mode after the other can favour either: `--rounds N` runs both servers side by side
and moves the load between them in N alternating rounds (on, off, off, on, ...), each
mode's figures pooled over its rounds. With both modes it prints each request's p50 and p95
with consent and audit over without, against issue 7's 1.2; `--plot` draws every request's
p50, p95 and p99 with issue 6's target and 1.2 times the p95 without consent marked.

A client is a partner system's user: it sends a request, reads the answer, and waits a think
time (uniform 0.5 to 1.5 s by default, as locust's `between(0.5, 1.5)`) before the next, so
50 clients offer about 50 requests a second. `--think-time 0` makes them closed-loop (each
sends its next request the moment the last one is answered): that measures the most the
server can answer, and its latency is then queueing, about users / throughput.

The load generator is asyncio + httpx2 (already a dev dependency) rather than locust: the
same user model in one event loop, timed with `perf_counter` around the whole request.
Locust would add gevent and a second HTTP stack, and its percentiles are bucketed (rounded
to 2 significant figures above 100 ms); here every latency is kept and the percentiles are
exact. The generator shares the machine with the server: its CPU use is printed so a reader
can tell whether the client, not the server, was the limit. So is the CPU time the server
and its PostgreSQL backends spent per request, which, unlike latency, does not depend on
how busy the machine was.

The bench client is registered with the role `partner_system`, scope `system/*.rs` and
purpose of use TREAT (direct care), so every request passes the consent engine and writes
its audit entry, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import ECKey

REPO = Path(__file__).resolve().parents[1]
NHS = "https://fhir.nhs.uk/Id/nhs-number"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
OFF = " (consent and audit off)"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Result:
    name: str
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    client_cpu: float = 0.0
    server_cpu: float = 0.0  # seconds: the server's processes and its database backends

    def merge(self, part: Result) -> None:
        """Add a later part of the same measurement (another round)."""
        self.seconds += part.seconds
        self.latencies += part.latencies
        self.client_cpu += part.client_cpu
        self.server_cpu += part.server_cpu
        for kind, count in part.error_kinds.items():
            self.errors += count
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + count

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))  # nearest
        return ordered[rank] * 1000

    def row(self) -> str:
        done = len(self.latencies) + self.errors
        return (f"| {self.name} | {done:,} | {done / self.seconds:,.1f} | "
                f"{self.percentile(50):.1f} | {self.percentile(95):.1f} | "
                f"{self.percentile(99):.1f} | {max(self.latencies, default=0) * 1000:.0f} | "
                f"{self.errors}{self._kinds()} | {self.client_cpu / self.seconds * 100:.0f}% | "
                f"{self.server_cpu / max(done, 1) * 1000:.2f} |")

    def _kinds(self) -> str:
        """What the errors were (HTTP status or the client's exception), kept in the table."""
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.error_kinds.items()))
        return f" ({kinds})" if kinds else ""


# -- the server ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def register_client(env: dict[str, str], folder: Path) -> tuple[str, ECKey]:
    key = ECKey.generate_key("P-384", parameters={"kid": f"bench-{uuid.uuid4().hex[:8]}"})
    jwks = folder / "bench.jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    out = subprocess.run(
        [sys.executable, "-m", "unified_record", "clients", "add", "--name", "API load bench",
         "--jwks-file", str(jwks), "--scope", "system/*.rs", "--org", "A81001",
         "--role", "partner_system", "--purpose", "TREAT"], env=env, capture_output=True,
        text=True, check=True)
    return out.stdout.strip().splitlines()[-1], key


class Server:
    """`unified-record serve` in a subprocess (its own process group, stopped at the end)."""

    def __init__(self, env: dict[str, str], workers: int, log: Path | None,
                 consent: bool = True, startup_seconds: float = 120) -> None:
        self.log = log
        self.startup_seconds = startup_seconds
        self.consent = consent
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # libpq names each of this server's backends so that its CPU is told apart from
        # other clients' of the same database (pg_stat_activity.application_name)
        self.application_name = f"ur-bench-{self.port}"
        self.env = {**env, "UR_HOST": "127.0.0.1", "UR_PORT": str(self.port),
                    "UR_WORKERS": str(workers), "PGAPPNAME": self.application_name}
        self.env.pop("UR_PUBLIC_URL", None)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        output = self.log.open("ab") if self.log else subprocess.DEVNULL
        if self.consent:
            command = [sys.executable, "-m", "unified_record", "serve"]
            env = self.env
        else:  # the same app with consent and audit taken out (bench/serve_unguarded.py)
            command = [sys.executable, "-m", "uvicorn", "serve_unguarded:create_app",
                       "--factory", "--host", "127.0.0.1", "--port", str(self.port),
                       "--workers", self.env["UR_WORKERS"], "--no-server-header",
                       "--timeout-keep-alive", "65"]  # as `serve` (UR_KEEP_ALIVE_SECONDS)
            env = {**self.env, "PYTHONPATH": str(REPO / "bench")}
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                        stderr=output, start_new_session=True)
        try:
            self._wait_until_serving()
        except BaseException:
            self.__exit__()  # a server that failed to start is not left running
            raise
        return self

    def _wait_until_serving(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_seconds
        while True:
            if self.process.poll() is not None:
                raise SystemExit("serve exited; run it by hand to see why")
            try:
                if httpx2.get(f"{self.base}/fhir/metadata", timeout=2).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"serve did not answer within {self.startup_seconds:g} s")
            time.sleep(0.3)

    def __exit__(self, *_: object) -> None:
        """Stop the server's whole process group (uvicorn's workers too)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:  # the group is gone already
            self.process.wait()
            return
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def token(base: str, client_id: str, key: ECKey, post: Callable[..., Any] = httpx2.post
          ) -> str:
    """A SMART Backend Services token; `post` sends the form (an in-process client's too)."""
    token_url = f"{base}/oauth/token"
    signed = jwt.encode(
        {"alg": "ES384", "kid": key.kid, "typ": "JWT"},
        {"iss": client_id, "sub": client_id, "aud": token_url,
         "exp": int(time.time()) + 240, "jti": uuid.uuid4().hex}, key, algorithms=["ES384"])
    response = post(token_url, data={
        "grant_type": "client_credentials", "scope": "system/*.rs",
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": signed}, timeout=30)
    response.raise_for_status()
    access: str = response.json()["access_token"]
    return access


# -- the load -----------------------------------------------------------------------------------


async def run_load(base: str, headers: dict[str, str], urls: Sequence[str], name: str,
                   concurrency: int, seconds: float, warmup: float, think: float = 0.0,
                   server_cpu: Callable[[], Mapping[int, int]] = dict) -> Result:
    """`concurrency` users, each sending a request, reading the answer, then waiting a
    think time drawn uniformly from [0.5, 1.5] x `think` seconds (none when 0: closed loop,
    every user sends its next request at once)."""
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(base_url=base, headers=headers, limits=limits,
                                  timeout=30) as http:
        result = Result(name, seconds)
        measuring = False

        async def user(seed: int) -> None:
            rng = random.Random(seed)
            while True:
                url = rng.choice(urls)
                started = time.perf_counter()
                try:
                    response = await http.get(url)
                    elapsed = time.perf_counter() - started
                    ok = response.status_code == 200 and response.json().get("total", 0) >= 1
                    kind = "" if ok else f"HTTP {response.status_code}"
                except httpx2.HTTPError as exc:
                    elapsed, kind = time.perf_counter() - started, type(exc).__name__
                if measuring:
                    if kind:
                        result.error(kind)
                    else:
                        result.latencies.append(elapsed)
                if think:
                    await asyncio.sleep(rng.uniform(0.5 * think, 1.5 * think))

        tasks = [asyncio.create_task(user(i)) for i in range(concurrency)]
        await asyncio.sleep(warmup)
        cpu_before, server_before = _cpu(), server_cpu()
        measuring = True
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        measuring = False
        result.seconds = time.perf_counter() - started
        result.client_cpu = _cpu() - cpu_before
        result.server_cpu = cpu_between(server_before, server_cpu())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return result


def server_cpu_ticks(server: Server, database_url: str) -> dict[int, int]:
    """CPU ticks used so far by each of the server's processes (its session) and each of its
    database backends (by application name): what one request costs the machine, wherever it
    is spent. Other clients of the same database (the other mode's server, tests running
    beside the bench) are left out."""
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        backends = set(conn.execute(sa.text(
            "SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
            {"name": server.application_name}).scalars())
    engine.dispose()
    assert server.process is not None
    ticks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        # fields[3] is the session id, fields[11] and [12] user and system time (ticks)
        if int(fields[3]) == server.process.pid or int(entry.name) in backends:
            ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    return ticks


def cpu_between(before: Mapping[int, int], after: Mapping[int, int]) -> float:
    """CPU seconds the processes alive at the end used since `before`, one by one: a process
    that ended meanwhile drops out of both ends, never subtracting its whole life."""
    used = sum(ticks - before.get(pid, 0) for pid, ticks in after.items())
    return used / os.sysconf("SC_CLK_TCK")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def targets(base: str, headers: dict[str, str], database_url: str, sample: int,
            seed: int) -> tuple[list[str], list[str]]:
    """NHS numbers of real clients (read through the API, before timing) and client ids."""
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        clients = list(conn.execute(sa.text(
            "SELECT id FROM client WHERE status = 'active' ORDER BY id")).scalars())
    engine.dispose()
    if not clients:
        raise SystemExit("no clients: ingest and link a population first (see the docstring)")
    rng = random.Random(seed)
    chosen = rng.sample(clients, min(sample, len(clients)))
    numbers: list[str] = []
    with httpx2.Client(base_url=base, headers=headers, timeout=30) as http:
        for client_id in chosen:
            body = http.get(f"/fhir/Patient/{client_id}").json()
            numbers += [i["value"] for i in body.get("identifier") or []
                        if i.get("system") == NHS][:1]
    searches = [f"/fhir/Patient?identifier={NHS}|{n}" for n in numbers]
    everything = [f"/fhir/Patient/{c}/$everything" for c in chosen]
    return searches, everything


def prime(base: str, headers: dict[str, str], urls: Sequence[str]) -> None:
    """Ask every distinct request once, untimed, so that no scenario pays for reading the
    database from disk on its first pass while the one after it finds it in memory."""
    with httpx2.Client(base_url=base, headers=headers, timeout=30) as http:
        for url in urls:
            http.get(url)


def _headers(server: Server, client_id: str, key: ECKey) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(server.base, client_id, key)}",
            "Accept": "application/fhir+json"}


def measure(scenario: str, modes: Sequence[bool], rounds: int, env: dict[str, str],
            client_id: str, key: ECKey, args: argparse.Namespace) -> list[Result]:
    """One scenario in each mode, each against its own freshly started server. With two
    modes and several rounds, both servers run side by side and the load moves between
    them (on, off, off, on, on, off, ...): a machine whose speed drifts during the run then
    slows both modes alike, which one run after the other cannot promise."""
    name = ("GET /fhir/Patient?identifier=…" if scenario == "search"
            else "GET /fhir/Patient/{id}/$everything")
    pooled = {consent: Result(name + ("" if consent else OFF), 0.0)
              for consent in modes}
    with contextlib.ExitStack() as stack:
        servers = {consent: stack.enter_context(Server(env, args.workers, args.server_log,
                                                       consent)) for consent in modes}
        urls: dict[bool, list[str]] = {}
        for consent, server in servers.items():
            headers = _headers(server, client_id, key)
            searches, everything = targets(server.base, headers, args.database_url,
                                           args.sample, args.seed)
            urls[consent] = searches if scenario == "search" else everything
            prime(server.base, headers, urls[consent])
        seconds = args.duration / rounds
        for number in range(rounds):
            order = list(modes) if number % 2 == 0 else list(reversed(modes))
            for consent in order:
                server, result = servers[consent], pooled[consent]
                headers = _headers(server, client_id, key)  # tokens last 5 minutes
                say(f"{result.name}: {len(urls[consent])} distinct requests, "
                    f"{args.concurrency} users, think time {args.think_time:g} s, "
                    f"{seconds:.0f} s after {args.warmup:.0f} s warm-up"
                    + (f" (round {number + 1} of {rounds})" if rounds > 1 else "") + " ...")
                part = asyncio.run(run_load(
                    server.base, headers, urls[consent], result.name, args.concurrency,
                    seconds, args.warmup, args.think_time,
                    functools.partial(server_cpu_ticks, server, args.database_url)))
                result.merge(part)
                say(f"  errors: {part.error_kinds or 'none'}")
    return list(pooled.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("UR_DATABASE_URL", ""))
    parser.add_argument("--data-dir", default=os.environ.get("UR_DATA_DIR", ""),
                        help="the data folder the population was ingested with (its keys)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--think-time", type=float, default=1.0,
                        help="mean seconds a user waits between an answer and its next "
                             "request (uniform over 0.5-1.5 times this); 0: closed loop")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--sample", type=int, default=500,
                        help="how many clients the requests are drawn from")
    parser.add_argument("--scenario", choices=("search", "everything", "both"),
                        default="both")
    parser.add_argument("--consent", choices=("on", "off", "both"), default="on",
                        help="off: the same app with the consent engine and audit log taken "
                             "out (bench/serve_unguarded.py), the baseline for issue 7")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --consent both: split each mode's duration into this many "
                             "rounds, alternating between the two servers")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--server-log", type=Path, default=None,
                        help="append the server's standard error here")
    parser.add_argument("--plot", type=Path, default=None,
                        help="write an SVG chart of each request's p50, p95 and p99 here")
    args = parser.parse_args()
    if not args.database_url.startswith("postgresql") or not args.data_dir:
        raise SystemExit("set UR_DATABASE_URL (PostgreSQL) and UR_DATA_DIR, or pass "
                         "--database-url and --data-dir")
    env = {**os.environ, "UR_DATABASE_URL": args.database_url, "UR_DATA_DIR": args.data_dir}
    with tempfile.TemporaryDirectory() as folder:
        client_id, key = register_client(env, Path(folder))
    engine = sa.create_engine(args.database_url)
    with engine.connect() as conn:
        people = conn.execute(sa.text("SELECT count(*) FROM client WHERE status = 'active'"
                                      )).scalar_one()
        resources = conn.execute(sa.text("SELECT count(*) FROM resource")).scalar_one()
    engine.dispose()
    say(f"store: {people:,} active clients, {resources:,} resources")

    scenarios = ["search", "everything"] if args.scenario == "both" else [args.scenario]
    modes = [True, False] if args.consent == "both" else [args.consent == "on"]
    rounds = args.rounds if len(modes) == 2 else 1
    results: list[Result] = []
    for scenario in scenarios:
        results += measure(scenario, modes, rounds, env, client_id, key, args)
    results.sort(key=lambda result: result.name.endswith(OFF))  # consent on first
    think = (f"think time {args.think_time:g} s (uniform {0.5 * args.think_time:g}-"
             f"{1.5 * args.think_time:g} s)" if args.think_time else "no think time")
    print(f"\n{people:,} active clients, {resources:,} resources; serve with "
          f"{args.workers} workers; {args.concurrency} concurrent users, {think}; "
          f"{args.duration:.0f} s each"
          + (f", in {rounds} alternating rounds per mode" if rounds > 1 else "") + "\n")
    print("| request | requests | per second | p50 ms | p95 ms | p99 ms | max ms | errors "
          "| load generator CPU | server CPU ms per request |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        print(result.row())
    ratios = consent_ratios(results)
    if ratios:
        print()
        print("\n".join(ratios))
    if args.plot:
        args.plot.write_text(svg_chart(results, f"{people:,} active clients, "
                                                f"{args.concurrency} users, {think}"))
        say(f"chart written to {args.plot}")


# -- what the figures say ------------------------------------------------------------------------

ISSUE_7_LIMIT = 1.2  # consent and audit on: within 20% of the figures without them
TARGET_P95_MS = {"GET /fhir/Patient?identifier=…": 50.0,  # issue 6
                 "GET /fhir/Patient/{id}/$everything": 150.0}


def paired(results: Sequence[Result]) -> list[tuple[Result, Result | None]]:
    """Each request with consent and audit on beside the same request off (None if it was
    measured in one mode only; a run of only `--consent off` gives its results alone)."""
    off = {r.name.removesuffix(OFF): r for r in results if r.name.endswith(OFF)}
    return ([(r, off.get(r.name)) for r in results if not r.name.endswith(OFF)]
            or [(r, None) for r in results])


def consent_ratios(results: Sequence[Result]) -> list[str]:
    """One line per request measured in both modes: p50 and p95 with consent and audit on
    over off, and whether the p95 is within issue 7's 20%."""
    lines = []
    for on, off in paired(results):
        if off is None:
            continue
        p95 = on.percentile(95) / off.percentile(95)
        p50 = on.percentile(50) / off.percentile(50)
        verdict = "within" if round(p95, 2) <= ISSUE_7_LIMIT else "over"
        lines.append(f"{on.name}: consent and audit on / off: p50 {p50:.2f} times, p95 "
                     f"{p95:.2f} times ({verdict} issue 7's {ISSUE_7_LIMIT:g})")
    return lines


def svg_chart(results: Sequence[Result], subtitle: str) -> str:
    """Each request's latency as a bar to its p95, a paler bar on to its p99 and a tick at
    its p50; with both modes, a dashed mark at 1.2 times the p95 without consent (issue 7)
    and, for the two scenarios, issue 6's p95 target."""
    width, left, right, bar, gap = 760, 290, 170, 22, 6
    rows = paired(results)
    finite = [p99 for r in results if math.isfinite(p99 := r.percentile(99))]
    targets = {r.name: TARGET_P95_MS.get(r.name.removesuffix(OFF)) for r, _ in rows}
    top = max([*finite, *(t for t in targets.values() if t), 1.0]) * 1.05
    scale = (width - left - right) / top
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{{height}}" '
             'font-family="sans-serif" font-size="12">',
             "<title>API latency with consent and audit on and off</title>",
             '<text x="10" y="22" font-size="15">FHIR API latency under load: p50 (tick), '
             'p95 (bar), p99 (pale)</text>',
             f'<text x="10" y="42">{_xml(subtitle)}</text>']
    y = 60
    for on, without in rows:
        pair = [(on, "on" if without else "", "#1d70b8"),
                *([(without, "off", "#505a5f")] if without else [])]
        parts.append(f'<text x="10" y="{y + 14}" font-weight="bold">{_xml(on.name)}</text>')
        y += 20
        for result, mode, colour in pair:
            p50, p95, p99 = (result.percentile(q) for q in (50, 95, 99))
            label = f"consent and audit {mode}" if mode else "measured"
            parts += [
                f'<text x="20" y="{y + bar * 0.7:.0f}">{label}</text>',
                f'<rect x="{left}" y="{y}" width="{p99 * scale:.1f}" height="{bar}" '
                f'fill="{colour}" fill-opacity="0.3"/>',
                f'<rect class="p95" x="{left}" y="{y}" width="{p95 * scale:.1f}" '
                f'height="{bar}" fill="{colour}"/>',
                f'<line x1="{left + p50 * scale:.1f}" y1="{y}" x2="{left + p50 * scale:.1f}" '
                f'y2="{y + bar}" stroke="white" stroke-width="2"/>',
                f'<text x="{left + p99 * scale + 6:.1f}" y="{y + bar * 0.7:.0f}">'
                f'{p50:.0f} / {p95:.0f} / {p99:.0f} ms</text>']
            y += bar + gap // 2
        target = targets[on.name]
        target = targets[on.name]
        top_y, bottom_y = y - len(pair) * (bar + gap // 2) - 2, y + 2
        marks = [(target, "#8a8e91", "issue 6 target", top_y - 4)] if target else []
        if without:
            marks.append((ISSUE_7_LIMIT * without.percentile(95), "#d4351c",
                          f"{ISSUE_7_LIMIT:g} x p95 off (issue 7)", bottom_y + 12))
        for value, colour, text, text_y in marks:
            x = left + value * scale
            parts += [f'<line class="mark" x1="{x:.1f}" y1="{top_y}" x2="{x:.1f}" '
                      f'y2="{bottom_y}" stroke="{colour}" stroke-dasharray="4 3"/>',
                      f'<text x="{x + 4:.1f}" y="{text_y}" fill="{colour}" '
                      f'font-size="11">{text}</text>']
        y += 26 + gap
    parts[0] = parts[0].replace("{height}", str(y + 10))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


if __name__ == "__main__":
    main()
