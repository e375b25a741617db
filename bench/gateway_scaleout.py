"""Gateway scale-out: stateless gateway replicas on PostgreSQL against one gateway on SQLite.

    python bench/gateway_scaleout.py                         # full run: 5-8 minutes on 2 cores
    python bench/gateway_scaleout.py --rates 20,40,80 --duration 3 --admission-duration 3   # smoke: ~2 minutes

Starts one retrieval shard and one ranking worker (once, shared by everything below), a real PostgreSQL
server (`tests/postgres_server.py`: initdb on a temp dir, a free loopback port) and gateways on port 0,
then measures in one run:

1. Recommend throughput at p99 <= --target-p99-ms for four configurations: 1 gateway on SQLite,
   2 gateways on SQLite (each its own state dir, loaded separately: they do NOT share state), 1 gateway
   on PostgreSQL, 2 gateways on PostgreSQL (one database). Each is an open-loop rate sweep
   (`lmrec_tools.loadtest.drive_open_loop`, latency from the scheduled send time) with calls round-robined over
   the configuration's gateways; the "knee" is the highest offered rate with p99 <= target and fewer
   than --max-error-share failed calls.
2. Catalogue propagation between replicas (PostgreSQL, 2 gateways): UpsertItems of a new item through
   A, then GetItems on B every --propagation-poll-ms until it is there; from A's acknowledgement.
3. Admission control: a fresh PostgreSQL gateway with --max-in-flight-recommends N, loaded at the
   1-gateway PostgreSQL knee and at twice it. The issue's target: at 2x the knee, the p99 of admitted
   (answered) calls <= 2x the p99 at the knee, the excess refused with RESOURCE_EXHAUSTED, nothing else
   failing.

Every gateway holds the same ML-100K catalogue and the histories of --history-users users (chosen with
--seed); the request mix draws its known users from those. Writes docs/benchmarks/gateway_scaleout.json
with the command, date, machine, git commit and every setting. Stops every process it started, PostgreSQL
included, also on errors, Ctrl-C, SIGTERM and after --max-wall-s.

Long because the three measurements share one start of the tiers and must run side by side in one run on
one machine state; each step is its own small function.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `tests.postgres_server` lives in the repository, not in the package

from gateway.settings import GatewaySettings  # noqa: E402
from lmrec.auth import local_token_env  # noqa: E402
from lmrec_tools.catalog_loader import load_catalog  # noqa: E402
from lmrec.client import gateway_aio_channel, gateway_channel  # noqa: E402
from lmrec_data.datasets import Dataset, DatasetError, load_dataset, resolve_data_path  # noqa: E402
from lmrec_data.request_mix import QUERIES, RequestMix  # noqa: E402
from lmrec_tools.loadtest import drive_open_loop, grpc_call_fn, rates_arg  # noqa: E402
from lmrec_tools.loadtest_report import OK, LatencyRecorder, LoadReport, describe_machine  # noqa: E402
from lmrec.bundle import load_manifest  # noqa: E402
from lmrec_tools.supervisor import ProcessGroup, StartupError, SystemLayout, start_retrieval_shard  # noqa: E402
from lmrec.v1 import common_pb2, gateway_service_pb2 as gw, gateway_service_pb2_grpc as gw_grpc  # noqa: E402

OUT = REPO / "docs" / "benchmarks" / "gateway_scaleout.json"
BUNDLES = (REPO / "artifacts" / "lmrec-ml100k", REPO / "artifacts" / "minilm-zeroshot")
CONFIGS = {"sqlite-1": ("sqlite", 1), "sqlite-2": ("sqlite", 2),
           "postgres-1": ("postgresql", 1), "postgres-2": ("postgresql", 2)}
REFUSED = "RESOURCE_EXHAUSTED"
START_TIMEOUT_S = 180.0
LOAD_CALL_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 10.0
GATEWAY_ENV_PREFIX = "LMREC_GATEWAY_"
# Authentication on, as in production: every gateway accepts one token (shared by the replicas), which
# the load generator and the bench's own clients send (LMREC_TOKEN, lmrec/client.py).
TOKEN_ENV = local_token_env("bench")
os.environ["LMREC_TOKEN"] = TOKEN_ENV["LMREC_TOKEN"]
GATEWAY_ENV = {"LMREC_GATEWAY_AUTH_TOKENS": TOKEN_ENV["LMREC_GATEWAY_AUTH_TOKENS"]}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="which configurations to sweep, in order (default %(default)s)")
    parser.add_argument("--rates", type=rates_arg, default=rates_arg("20,40,60,80,100,130,160"),
                        help="offered req/s, comma-separated (default 20,40,60,80,100,130,160)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per rate (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds at the lowest rate per configuration, not reported (default %(default)s)")
    parser.add_argument("--pause", type=float, default=1.0, help="idle seconds between runs (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=5.0, help="per-call deadline, s (default %(default)s)")
    parser.add_argument("--target-p99-ms", type=float, default=50.0)
    parser.add_argument("--max-error-share", type=float, default=0.01,
                        help="a rate counts for the knee only below this failed share (default %(default)s)")
    parser.add_argument("--stop-after-misses", type=int, default=2,
                        help="end a sweep after this many rates in a row missed the target (default %(default)s)")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="dataset (default: LMREC_DATA or ../shared/data/ml-100k)")
    parser.add_argument("--history-users", type=int, default=300,
                        help="users whose events every gateway state is loaded with; 0 = all (default %(default)s)")
    parser.add_argument("--bundle", type=Path, help="model bundle (default: artifacts/lmrec-ml100k, "
                                                    "else artifacts/minilm-zeroshot)")
    parser.add_argument("--state-sync-s", type=float, default=0.2,
                        help="the PostgreSQL gateways' --state-sync-s (default %(default)s)")
    parser.add_argument("--propagation-rounds", type=int, default=30)
    parser.add_argument("--propagation-poll-ms", type=float, default=5.0)
    parser.add_argument("--propagation-timeout-s", type=float, default=10.0,
                        help="a round not seen on B within this long counts as missed (default %(default)s)")
    parser.add_argument("--max-in-flight-recommends", type=int,
                        default=GatewaySettings.model_fields["max_in_flight_recommends"].default,
                        help="the admission-control gateway's limit (default: the gateway's, %(default)s); "
                             "the sweeps run gateways with their default")
    parser.add_argument("--admission-duration", type=float, help="seconds per admission run (default --duration)")
    parser.add_argument("--max-wall-s", type=float, default=1800.0,
                        help="stop everything and fail after this long (default %(default)s)")
    parser.add_argument("--keep-state", action="store_true", help="keep the temp dirs (logs) even on success")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown or not args.configs:
        parser.error(f"--configs: unknown {unknown}; choose from {', '.join(CONFIGS)}")
    args.admission_duration = args.admission_duration or args.duration
    return args


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Data and request mix


def bench_dataset(path: str | None, users: int, seed: int) -> Dataset:
    """Every item, and the events of `users` users drawn with `seed` (all users when 0)."""
    full = load_dataset(resolve_data_path(path))
    everyone = sorted({x.user_id for x in full.interactions})
    if 0 < users < len(everyone):
        kept = set(random.Random(seed).sample(everyone, users))
    else:
        kept = set(everyone)
    return Dataset(full.name, full.items, [x for x in full.interactions if x.user_id in kept], full.users)


def request_mix(dataset: Dataset, k: int, seed: int) -> RequestMix:
    """The loadtest mix (RequestMix.from_dataset's weights) over the users whose histories were loaded, so
    a "known" user is known to every gateway."""
    activity = Counter(x.user_id for x in dataset.interactions)
    genres = Counter(g for item in dataset.items for g in item.attributes.get("genre", []))
    users, names = sorted(activity), sorted(genres)
    return RequestMix(users, [activity[u] for u in users], names, [genres[g] for g in names], k=k, seed=seed,
                      source=f"{dataset.name}, {len(users)} users with histories")


def describe_data(dataset: Dataset, args: argparse.Namespace) -> dict:
    return {"dataset": dataset.name, "path": str(resolve_data_path(args.data)), "items": len(dataset.items),
            "usersWithHistories": len({x.user_id for x in dataset.interactions}),
            "events": len(dataset.interactions),
            "historyUsersDrawnWithSeed": args.seed if args.history_users else None,
            "loadedInto": "every SQLite gateway's own state dir, and once into the PostgreSQL database"}


# --------------------------------------------------------------------------------------------------
# Processes


@dataclass
class Tier:
    """What every configuration shares: the process group, the workers' addresses, the database server."""

    group: ProcessGroup
    root: Path
    ranking: str
    retrieval: str
    args: argparse.Namespace
    postgres: object = None  # tests.postgres_server.PostgresServer when a configuration needs it
    database_url: str | None = None


def choose_bundle(bundle: Path | None) -> Path:
    if bundle is not None:
        return bundle
    for candidate in BUNDLES:
        if (candidate / "manifest.json").is_file():
            return candidate
    raise SystemExit(f"no model bundle: none of {', '.join(map(str, BUNDLES))} has a manifest.json")


def start_postgres_or_exit(root: Path):
    """A real PostgreSQL server; a clear exit instead of pytest's skip/fail when it cannot be had."""
    try:
        import pytest

        from tests.postgres_server import start_postgres
    except ImportError as exc:
        raise SystemExit(f"PostgreSQL configurations need the test helpers (pytest, psycopg): {exc}") from None
    try:
        return start_postgres(root)
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        raise SystemExit(f"cannot start PostgreSQL: {exc}; run with --configs sqlite-1,sqlite-2") from None


def start_workers(tier_root: Path, bundle: Path, group: ProcessGroup) -> tuple[str, str]:
    """One retrieval shard and one ranking worker, as `lmrec serve` starts them; returns their addresses."""
    dimension = load_manifest(bundle, verify_checksums=False).served_dimension
    layout = SystemLayout(state_dir=tier_root, bundle_dir=bundle, retrieval_port=0, dimension=dimension)
    retrieval = start_retrieval_shard(group, layout, 0).address
    ranking = group.start("ranking", "ranking_service", [
        "--port", "0", "--bundle-dir", str(bundle), "--state-dir", str(tier_root / "ranking")],
        timeout_s=START_TIMEOUT_S).address
    return ranking, retrieval


def start_gateway(tier: Tier, name: str, engine: str, extra: Sequence[str] = ()) -> str:
    """A gateway on port 0 in front of the shared workers; `engine` "postgresql" points it at the database."""
    args, env = [], dict(GATEWAY_ENV)
    if engine == "postgresql":
        args = ["--state-sync-s", str(tier.args.state_sync_s)]
        env["LMREC_GATEWAY_DATABASE_URL"] = tier.database_url  # as a Deployment's secret would give it
    service = tier.group.start(name, "gateway", [
        "--port", "0", "--ranking-address", tier.ranking, "--retrieval-addresses", tier.retrieval,
        "--state-dir", str(tier.root / name), *args, *extra], timeout_s=START_TIMEOUT_S, env=env)
    return service.address


def prime_query_cache(address: str, k: int) -> None:
    """Sends each loadtest query once: the ranking worker caches query vectors, and without this the first
    configuration alone would pay for encoding them."""
    with gateway_channel(address) as channel:
        stub = gw_grpc.GatewayServiceStub(channel)
        for n, query in enumerate(QUERIES):
            stub.Recommend(gw.RecommendRequest(user_id=f"scaleout-primer-{n}", query=query, k=k), timeout=30)


def stop_gateways(group: ProcessGroup) -> None:
    # Gateways before the workers they call.
    for name in [n for n in group.services if n.startswith("gw-")]:
        group.stop(name)


def load_state(address: str, dataset: Dataset) -> float:
    """Items and histories through the gateway's public API; returns the seconds it took."""
    started = time.monotonic()
    with gateway_channel(address) as channel:
        load_catalog(gw_grpc.GatewayServiceStub(channel), dataset, with_histories=True, timeout_s=LOAD_CALL_TIMEOUT_S)
    return round(time.monotonic() - started, 1)


def strip_gateway_environment() -> list[str]:
    """Drops LMREC_GATEWAY_* from this process's environment (the gateways inherit it): a database URL
    there would silently turn the SQLite configurations into PostgreSQL ones."""
    names = sorted(n for n in os.environ if n.startswith(GATEWAY_ENV_PREFIX))
    for name in names:
        del os.environ[name]
    return names


# --------------------------------------------------------------------------------------------------
# Load


class SplitRecorder(LatencyRecorder):
    """Also keeps the answered calls' latencies apart: under admission control the refused calls are fast
    and would pull the overall percentiles down."""

    def __init__(self) -> None:
        super().__init__()
        self.answered = LatencyRecorder()

    def record(self, latency_us: float, status: str = OK, *, degraded: bool = False, message: str = "") -> None:
        super().record(latency_us, status, degraded=degraded, message=message)
        if status == OK:
            self.answered.record(latency_us, status, degraded=degraded)


async def open_loop(addresses: list[str], mix: RequestMix, rate: float, duration_s: float,
                    timeout_s: float) -> LoadReport:
    """One open-loop run at `rate`, calls round-robined over `addresses` (one channel each)."""
    channels = [gateway_aio_channel(a) for a in addresses]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), CONNECT_TIMEOUT_S)
        call = grpc_call_fn([gw_grpc.GatewayServiceStub(c) for c in channels], timeout_s)
        recorder, elapsed, lag, scheduled = await drive_open_loop(
            call, mix.next_request, rate=rate, duration_s=duration_s, timeout_s=timeout_s, recorder=SplitRecorder())
        return LoadReport(",".join(addresses), "open-loop", recorder, elapsed, offered_rate=rate,
                          scheduled=scheduled, max_send_lag_s=lag)
    finally:
        await asyncio.gather(*(c.close() for c in channels))


def ms(us: float) -> float:
    return round(us / 1000.0, 2)


def point(report: LoadReport) -> dict:
    recorder: SplitRecorder = report.recorder
    answered = recorder.answered
    return {
        "offeredRate": report.offered_rate,
        "achievedRate": round(report.rps, 1),
        "answeredRate": round(answered.count * report.rps / report.count, 1) if report.count else 0.0,
        "calls": report.count,
        "errors": report.errors,
        "errorShare": round(report.errors / report.count, 4) if report.count else 1.0,
        "degraded": report.degraded,
        "statusCodeDistribution": dict(sorted(report.status_counts.items())),
        "errorMessages": dict(recorder.error_messages.most_common(5)),
        "latencyMs": {name: round(value, 2) for name, value in report.latency_ms().items()},
        "answeredLatencyMs": {"p50": ms(answered.percentile_us(50)), "p99": ms(answered.percentile_us(99))},
        "maxSendLagMs": round(report.max_send_lag_s * 1000, 1),
        "loadAverage1m": round(os.getloadavg()[0], 2),
    }


def meets_target(p: dict, args: argparse.Namespace) -> bool:
    return p["calls"] > 0 and p["latencyMs"]["p99"] <= args.target_p99_ms and p["errorShare"] < args.max_error_share


def point_line(label: str, p: dict) -> str:
    errors = {c: n for c, n in p["statusCodeDistribution"].items() if c != OK}
    latency = p["latencyMs"]
    return (f"{label} offered {p['offeredRate']:g}/s: achieved {p['achievedRate']:.1f}/s, "
            f"p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms, errors {errors or 0}, "
            f"send lag {p['maxSendLagMs']:.0f} ms")


async def sweep(name: str, addresses: list[str], dataset: Dataset, args: argparse.Namespace) -> dict:
    """The rates in order until --stop-after-misses rates in a row miss the target."""
    if args.warmup > 0:
        await open_loop(addresses, request_mix(dataset, args.k, args.seed + 1000), args.rates[0], args.warmup,
                        args.timeout)
    points, misses = [], 0
    for rate in args.rates:
        p = point(await open_loop(addresses, request_mix(dataset, args.k, args.seed), rate, args.duration,
                                  args.timeout))
        p["meetsTarget"] = meets_target(p, args)
        points.append(p)
        say(point_line(name, p))
        misses = 0 if p["meetsTarget"] else misses + 1
        if misses >= args.stop_after_misses:
            break
        await asyncio.sleep(args.pause)
    swept = {p["offeredRate"] for p in points}
    return {"points": points, "kneeRate": max((p["offeredRate"] for p in points if p["meetsTarget"]), default=None),
            "skippedRates": [r for r in args.rates if r not in swept]}


# --------------------------------------------------------------------------------------------------
# Catalogue propagation


def probe_item(token: str, n: int) -> common_pb2.Item:
    return common_pb2.Item(item_id=f"scaleout-probe-{token}-{n}", title=f"Replica probe {n} ({token})",
                           text=f"A film about replica number {n} waiting for its catalogue.",
                           attributes={"genre": common_pb2.AttributeValues(values=["Drama"])})


async def first_seen(stub: gw_grpc.GatewayServiceStub, item_id: str, poll_s: float, timeout_s: float) -> float | None:
    """perf_counter() of the first GetItems that returns `item_id`; None when it never does."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        answer = await stub.GetItems(gw.GetItemsRequest(item_ids=[item_id]), timeout=2.0)
        if not answer.missing_item_ids:
            return time.perf_counter()
        await asyncio.sleep(poll_s)
    return None


def seconds_summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    arr = np.array(values)
    return {"n": len(values), "p50": round(float(np.percentile(arr, 50)), 4),
            "p95": round(float(np.percentile(arr, 95)), 4), "max": round(float(arr.max()), 4)}


async def propagation(a: str, b: str, args: argparse.Namespace) -> dict:
    rng, token = random.Random(args.seed), uuid.uuid4().hex[:8]
    seen, upsert_s, missed = [], [], 0
    async with gateway_aio_channel(a) as channel_a, gateway_aio_channel(b) as channel_b:
        stub_a, stub_b = gw_grpc.GatewayServiceStub(channel_a), gw_grpc.GatewayServiceStub(channel_b)
        for n in range(args.propagation_rounds):
            # A random phase against B's sync timer; back-to-back rounds would each start right after a
            # sync and all measure about the same delay.
            await asyncio.sleep(rng.uniform(0, args.state_sync_s))
            item = probe_item(token, n)
            sent = time.perf_counter()
            await stub_a.UpsertItems(gw.UpsertItemsRequest(items=[item]), timeout=30)
            acknowledged = time.perf_counter()
            upsert_s.append(acknowledged - sent)
            at = await first_seen(stub_b, item.item_id, args.propagation_poll_ms / 1000, args.propagation_timeout_s)
            if at is None:
                missed += 1
            else:
                seen.append(max(0.0, at - acknowledged))
    return {"from": a, "to": b, "stateSyncS": args.state_sync_s, "pollMs": args.propagation_poll_ms,
            "rounds": args.propagation_rounds, "missedWithinS": {"count": missed, "s": args.propagation_timeout_s},
            "fromAcknowledgementS": seconds_summary(seen), "upsertCallS": seconds_summary(upsert_s),
            "measured": "from UpsertItems returning on A to the first GetItems on B that holds the item"}


# --------------------------------------------------------------------------------------------------
# Admission control


def judge_admission(at_knee: dict, at_double: dict) -> dict:
    """The issue's target: admitted p99 at 2x <= 2x the p99 at the knee, nothing but RESOURCE_EXHAUSTED failing."""
    base = at_knee["answeredLatencyMs"]["p99"]
    limit, measured = 2 * base, at_double["answeredLatencyMs"]["p99"]
    others = {run: {c: n for c, n in p["statusCodeDistribution"].items() if c not in (OK, REFUSED)}
              for run, p in (("knee", at_knee), ("double", at_double))}
    p99_ok = measured <= limit
    met = p99_ok and not others["knee"] and not others["double"]
    return {"met": met, "admittedP99MsAtDouble": measured, "allowedP99Ms": limit, "otherErrors": others,
            "why": f"admitted p99 {measured:.1f} ms {'<=' if p99_ok else '>'} 2 x {base:.1f} ms; refused "
                   f"{at_double['statusCodeDistribution'].get(REFUSED, 0)} of {at_double['calls']} at 2x; "
                   f"other failures {others['double'] or 'none'}"}


async def admission(address: str, dataset: Dataset, knee: float, args: argparse.Namespace) -> dict:
    if args.warmup > 0:
        await open_loop([address], request_mix(dataset, args.k, args.seed + 1000), knee, args.warmup, args.timeout)
    runs = {}
    for label, rate in (("knee", knee), ("double", 2 * knee)):
        p = point(await open_loop([address], request_mix(dataset, args.k, args.seed), rate,
                                  args.admission_duration, args.timeout))
        p["refusedShare"] = round(p["statusCodeDistribution"].get(REFUSED, 0) / p["calls"], 4) if p["calls"] else 0.0
        runs[label] = p
        say(point_line(f"admission ({label})", p) + f", refused {p['refusedShare']:.1%}")
        await asyncio.sleep(args.pause)
    return {"runs": runs, "target": judge_admission(runs["knee"], runs["double"])}


# --------------------------------------------------------------------------------------------------
# The run


def gateway_names(engine: str, count: int) -> list[str]:
    return [f"gw-{engine}-{chr(ord('a') + i)}" for i in range(count)]


def ensure_gateways(tier: Tier, engine: str, count: int, dataset: Dataset, loads: dict) -> list[str]:
    """Starts what this configuration lacks of its engine's gateways. SQLite gateways are each loaded; the
    first PostgreSQL one loads the database, and the others read it."""
    addresses = []
    for n, name in enumerate(gateway_names(engine, count)):
        if name not in tier.group.services:
            address = start_gateway(tier, name, engine)
            if name not in loads and (engine == "sqlite" or n == 0):
                loads[name] = load_state(address, dataset)
                say(f"{name} at {address}: loaded in {loads[name]} s")
        addresses.append(tier.group.services[name].address)
    return addresses


CONFIG_NOTES = {
    "sqlite-1": "one gateway, embedded SQLite state",
    "sqlite-2": "two gateways, each on its own SQLite state dir (loaded separately with the same items and "
                "histories); they do NOT share state: feedback, catalogue changes, sessions and impressions "
                "through one are invisible to the other",
    "postgres-1": "one gateway on PostgreSQL",
    "postgres-2": "two gateways on the same PostgreSQL database (shared state)",
}


def run_configs(tier: Tier, dataset: Dataset, args: argparse.Namespace) -> tuple[dict, dict, dict | None]:
    """Sweeps the configurations in order; the propagation check runs on the 2-gateway PostgreSQL one."""
    results, loads, spread, engine_now = {}, {}, None, None
    for name in args.configs:
        engine, count = CONFIGS[name]
        if engine != engine_now:
            stop_gateways(tier.group)  # the other engine's idle gateways would still take CPU
            engine_now = engine
        addresses = ensure_gateways(tier, engine, count, dataset, loads)
        if not results:
            prime_query_cache(addresses[0], args.k)
        say(f"{name}: sweeping {addresses}")
        started = time.monotonic()
        swept = asyncio.run(sweep(name, addresses, dataset, args))
        results[name] = {"engine": engine, "gateways": count, "addresses": addresses, "note": CONFIG_NOTES[name],
                         **swept, "wallS": round(time.monotonic() - started, 1)}
        if name == "postgres-2" and args.propagation_rounds > 0:
            spread = asyncio.run(propagation(addresses[0], addresses[1], args))
            say(f"propagation: {spread['fromAcknowledgementS']}, missed {spread['missedWithinS']['count']}")
    stop_gateways(tier.group)
    return results, loads, spread


def run_admission(tier: Tier, dataset: Dataset, results: dict, args: argparse.Namespace) -> dict:
    """On a fresh gateway with the bench's limit: PostgreSQL when it was measured, else SQLite."""
    source = next((c for c in ("postgres-1", "sqlite-1") if c in results), None)
    if source is None:
        return {"skipped": "needs the postgres-1 or sqlite-1 configuration"}
    knee = results[source]["kneeRate"]
    note = f"the {source} knee"
    if knee is None:
        knee, note = args.rates[0], f"no rate met the target in {source}: the lowest swept rate stands in for the knee"
    engine = CONFIGS[source][0]
    name = f"gw-{engine}-admission"
    address = start_gateway(tier, name, engine, ["--max-in-flight-recommends", str(args.max_in_flight_recommends)])
    if engine == "sqlite":
        load_state(address, dataset)
    try:
        outcome = asyncio.run(admission(address, dataset, knee, args))
    finally:
        tier.group.stop(name)
    return {"engine": engine, "kneeFrom": source, "kneeRate": knee, "kneeNote": note,
            "maxInFlightRecommends": args.max_in_flight_recommends, **outcome}


def git_state() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    return {"commit": git("rev-parse", "HEAD") or None, "uncommittedTrackedFiles": len(changed)}


def document(args, argv, started_at, machine, bundle, dataset, stripped, tier, loads, results, spread,
             admitted) -> dict:
    return {
        "tool": "bench/gateway_scaleout.py",
        "command": shlex.join(["python", "bench/gateway_scaleout.py", *argv]),
        "date": started_at.isoformat(timespec="seconds"),
        "wallS": round((datetime.datetime.now(datetime.timezone.utc) - started_at).total_seconds(), 1),
        "machine": machine,
        "git": git_state(),
        "note": "every process (gateways, ranking worker, retrieval shard, PostgreSQL, load generator) shares "
                "this machine's cores; loadAverage1m in each point says how busy it was",
        "settings": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "bundle": str(bundle),
            "modelVersion": load_manifest(bundle, verify_checksums=False).model_version,
            "sweepGatewaysMaxInFlightRecommends": GatewaySettings.model_fields["max_in_flight_recommends"].default,
            "queryCache": f"the {len(QUERIES)} loadtest queries were sent once before the first sweep, so every "
                          "configuration meets the shared ranking worker's query-vector cache warm",
            "mixShares": "loadtest default: 20% cold users, 30% with a free-text query, 20% with a genre filter",
            "latency": "open loop, from each call's scheduled send time; p99 over every call, failed ones included",
            "knee": f"highest offered rate with p99 <= {args.target_p99_ms:g} ms and error share < "
                    f"{args.max_error_share:g}",
            "strippedEnvironment": stripped,
            "gatewayEnvironment": {"LMREC_GATEWAY_AUTH_TOKENS": "(one admin token, hashed)"},
            "postgres": None if tier.postgres is None else "Debian PostgreSQL, initdb on a temp dir, default "
                                                            "settings but max_connections=200, on this machine",
        },
        "data": describe_data(dataset, args),
        "stateLoadS": loads,
        "configurations": results,
        "propagation": spread,
        "admission": admitted,
    }


def install_deadline(max_wall_s: float) -> None:
    """SIGTERM and the wall-clock limit unwind like an error, so the finally blocks stop every process."""
    def stop(signum, frame):
        raise SystemExit(f"stopped by signal {signum}" if signum != signal.SIGALRM
                         else f"--max-wall-s {max_wall_s:g} exceeded")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, stop)
    signal.alarm(max(1, int(max_wall_s)))


def stop_stray_children() -> None:
    """Kills, by pid, children of this process still running: a service whose start was interrupted (by
    SIGTERM or --max-wall-s) never reached the ProcessGroup, which only stops what it registered."""
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            try:
                os.kill(int(stat.parent.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def stop_postgres(postgres, pg_root: Path | None) -> None:
    """Stops the server, also one whose start was interrupted before start_postgres returned it."""
    data_dir = pg_root / "pgdata" if pg_root else None
    try:
        if postgres is not None:
            postgres.stop("immediate")
        elif data_dir is not None and (data_dir / "postmaster.pid").exists() and shutil.which("pg_ctl"):
            command = ["pg_ctl", "-D", str(data_dir), "-m", "immediate", "-w", "stop"]
            if os.geteuid() == 0:
                command = ["runuser", "-u", "postgres", "--", shutil.which("pg_ctl"), *command[1:]]
            subprocess.run(command, check=False, capture_output=True, timeout=60)
    except Exception as exc:  # noqa: BLE001 - the other clean-ups still run
        say(f"PostgreSQL did not stop cleanly: {exc}")


def measure(args, argv, root: Path, group: ProcessGroup, postgres, dataset: Dataset, bundle: Path,
            stripped: list[str], started_at: datetime.datetime) -> dict:
    ranking, retrieval = start_workers(root, bundle, group)
    tier = Tier(group, root, ranking, retrieval, args, postgres, postgres.create_database() if postgres else None)
    say(f"ranking {ranking}, retrieval {retrieval}, bundle {bundle}, "
        f"{len(dataset.items)} items + {len(dataset.interactions)} events per state")
    results, loads, spread = run_configs(tier, dataset, args)
    admitted = run_admission(tier, dataset, results, args)
    say(f"admission: {admitted.get('target', admitted)}")
    return document(args, argv, started_at, describe_machine(), bundle, dataset, stripped, tier, loads, results,
                    spread, admitted)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    install_deadline(args.max_wall_s)
    started_at = datetime.datetime.now(datetime.timezone.utc)
    stripped = strip_gateway_environment()
    try:
        dataset = bench_dataset(args.data, args.history_users, args.seed)
    except DatasetError as exc:
        raise SystemExit(f"dataset: {exc}") from None
    bundle = choose_bundle(args.bundle)
    root = Path(tempfile.mkdtemp(prefix="lmrec-scaleout-"))
    group = ProcessGroup(root / "run")
    postgres = pg_root = None
    ok = False
    say(f"state and logs under {root}")
    try:
        if any(CONFIGS[c][0] == "postgresql" for c in args.configs):
            pg_root = Path(tempfile.mkdtemp(prefix="lmrec-pg-"))  # not under a root-only 0700 directory
            postgres = start_postgres_or_exit(pg_root)
        doc = measure(args, argv, root, group, postgres, dataset, bundle, stripped, started_at)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        say(f"wrote {args.out} ({doc['wallS']} s)")
        ok = True
    except StartupError as exc:
        raise SystemExit(f"a service did not start: {exc}") from None
    finally:
        signal.alarm(0)
        stop_gateways(group)
        group.stop_all()
        stop_stray_children()
        stop_postgres(postgres, pg_root)
        if ok and not args.keep_state:
            shutil.rmtree(root, ignore_errors=True)
            if pg_root is not None:
                shutil.rmtree(pg_root, ignore_errors=True)
        else:
            say(f"kept {root}" + (f" and {pg_root}" if pg_root else "") + " (logs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
