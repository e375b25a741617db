"""`lmrec loadtest`: a load generator for GatewayService.Recommend.

Two modes:

* **Open loop** (`--rate R`): request *i* is scheduled at `start + i / R` and its latency is measured
  from that scheduled time, not from when it was actually sent. Each call runs as its own task, so a
  slow answer never delays later sends; if the client itself falls behind (event loop busy), the lag
  shows up in the latencies instead of being silently absorbed. This avoids coordinated omission.
  In-flight calls are capped (`--max-in-flight`); a send refused by the cap is recorded as an error
  with status `CLIENT_INFLIGHT_CAP` and a latency equal to the call timeout, because the request would
  otherwise have disappeared from the percentiles exactly when the system is slowest.
* **Closed loop** (`--concurrency N`): N callers each send the next request as soon as the previous
  answer arrives; latency is measured from the actual send. This measures capacity, not latency under
  a given load, since callers wait for a slow server (coordinated omission is inherent here).

Requests are drawn from a deterministic mix (`--seed`) built from the dataset: known users weighted by
their activity, cold users with ids never seen, a share with free-text queries and a share with a
genre filter. Without data a synthetic mix is used.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import json
import math
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

import grpc

from lmrec.client import gateway_aio_channel
from lmrec_data.datasets import DatasetError
from lmrec_data.request_mix import MixShares, RequestMix, default_mix
from lmrec_tools.loadtest_report import CLIENT_INFLIGHT_CAP, OK, LatencyRecorder, LoadReport
from lmrec.v1 import gateway_service_pb2 as pb
from lmrec.v1 import gateway_service_pb2_grpc as pb_grpc
from lmrec.service_settings import GATEWAY_TARGET

DEFAULT_TARGET = GATEWAY_TARGET
DEFAULT_RATE = 10.0
DEFAULT_DURATION_S = 10.0
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_IN_FLIGHT = 1000

# --------------------------------------------------------------------------------------------------
# Scheduling and drivers. A "call function" takes a request and returns (status name, degraded,
# error message); the drivers only know about that, so tests can drive them without a network.

CallResult = tuple[str, bool, str]
CallFn = Callable[[pb.RecommendRequest], Awaitable[CallResult]]


def planned_count(rate: float, duration_s: float | None, requests: int | None) -> int:
    """Number of open-loop sends: those scheduled strictly before `duration_s`, at most `requests`."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if duration_s is None and requests is None:
        raise ValueError("give a duration, a request count, or both")
    limits = []
    if duration_s is not None:
        limits.append(math.ceil(duration_s * rate - 1e-9))
    if requests is not None:
        limits.append(requests)
    return max(0, min(limits))


def scheduled_offset(index: int, rate: float) -> float:
    """Seconds after the start at which open-loop request `index` is due."""
    return index / rate


async def drive_open_loop(
    call: CallFn,
    next_request: Callable[[], pb.RecommendRequest],
    *,
    rate: float,
    duration_s: float | None = None,
    requests: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    recorder: LatencyRecorder | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[LatencyRecorder, float, float, int]:
    """Sends at a constant rate regardless of how fast answers come back.

    Returns:
        (recorder, elapsed seconds until the last answer, largest lag of a send behind its schedule,
        number of scheduled sends).
    """
    recorder = recorder or LatencyRecorder()
    total = planned_count(rate, duration_s, requests)
    in_flight: set[asyncio.Task] = set()
    failures: list[BaseException] = []
    max_lag = 0.0

    async def one(request: pb.RecommendRequest, scheduled: float) -> None:
        status, degraded, message = await call(request)
        recorder.record((clock() - scheduled) * 1e6, status, degraded=degraded, message=message)

    def finished(task: asyncio.Task) -> None:
        in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            failures.append(task.exception())

    start = clock()
    for i in range(total):
        if failures:
            break
        scheduled = start + scheduled_offset(i, rate)
        delay = scheduled - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            # Behind schedule: still yield once so answers already received get recorded.
            await asyncio.sleep(0)
        max_lag = max(max_lag, clock() - scheduled)
        request = next_request()
        if len(in_flight) >= max_in_flight:
            recorder.record(timeout_s * 1e6, CLIENT_INFLIGHT_CAP,
                            message=f"{max_in_flight} calls already in flight")
            continue
        task = asyncio.create_task(one(request, scheduled))
        in_flight.add(task)
        task.add_done_callback(finished)
    if in_flight:
        await asyncio.wait(set(in_flight))
    if failures:
        raise failures[0]
    return recorder, clock() - start, max_lag, total


async def drive_closed_loop(
    call: CallFn,
    next_request: Callable[[], pb.RecommendRequest],
    *,
    concurrency: int,
    duration_s: float | None = None,
    requests: int | None = None,
    recorder: LatencyRecorder | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[LatencyRecorder, float, int]:
    """`concurrency` callers, each sending its next request when the previous answer arrives.

    Returns:
        (recorder, elapsed seconds, number of calls started).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if duration_s is None and requests is None:
        raise ValueError("give a duration, a request count, or both")
    recorder = recorder or LatencyRecorder()
    start = clock()
    stop_at = start + duration_s if duration_s is not None else math.inf
    started = 0

    async def caller() -> None:
        nonlocal started
        while clock() < stop_at and (requests is None or started < requests):
            started += 1
            request = next_request()
            sent = clock()
            status, degraded, message = await call(request)
            recorder.record((clock() - sent) * 1e6, status, degraded=degraded, message=message)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return recorder, clock() - start, started


def grpc_call_fn(stubs: Sequence[pb_grpc.GatewayServiceStub], timeout_s: float) -> CallFn:
    """Round-robins Recommend over `stubs`; RPC failures become their status name, not exceptions."""
    counter = 0

    async def call(request: pb.RecommendRequest) -> CallResult:
        nonlocal counter
        stub = stubs[counter % len(stubs)]
        counter += 1
        try:
            response = await stub.Recommend(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, False, exc.details() or ""
        return OK, response.degraded, ""

    return call


async def run_load(
    target: str = DEFAULT_TARGET,
    *,
    rate: float | None = None,
    concurrency: int | None = None,
    duration: float | None = None,
    requests: int | None = None,
    mix: RequestMix | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    connections: int = 1,
    connect_timeout_s: float | None = None,
) -> LoadReport:
    """Runs one bounded load test against a GatewayService at `target`.

    Args:
        rate: open-loop arrival rate in requests per second (exclusive with `concurrency`).
        concurrency: number of closed-loop callers.
        duration: seconds to keep sending; `requests`: maximum number of calls. At least one is needed.
        mix: where requests come from; default: the dataset at `resolve_data_path()`, else synthetic.
        timeout_s: per-call deadline.
        connections: number of gRPC channels (HTTP/2 connections) the calls are spread over.
        connect_timeout_s: how long to wait for the channels to connect before the clock starts
            (default `timeout_s`); if they do not connect, the run goes ahead and records the failures.

    Raises:
        ValueError: inconsistent arguments.
    """
    if (rate is None) == (concurrency is None):
        raise ValueError("give exactly one of rate (open loop) or concurrency (closed loop)")
    if duration is None and requests is None:
        raise ValueError("give a duration, a request count, or both")
    if connections < 1:
        raise ValueError(f"connections must be at least 1, got {connections}")
    if mix is None:
        mix = default_mix()
    # Each call carries LMREC_TOKEN; LMREC_TLS_CA makes the channels TLS (lmrec/client.py).
    channels = [gateway_aio_channel(target) for _ in range(connections)]
    try:
        await _wait_ready(channels, connect_timeout_s if connect_timeout_s is not None else timeout_s)
        call = grpc_call_fn([pb_grpc.GatewayServiceStub(c) for c in channels], timeout_s)
        options = {"timeoutS": timeout_s, "connections": connections, "k": mix.k, "seed": mix.seed,
                   "mix": mix.source, "duration": duration, "requests": requests}
        started_at = datetime.datetime.now(datetime.timezone.utc)
        if rate is not None:
            options["maxInFlight"] = max_in_flight
            recorder, elapsed, lag, scheduled = await drive_open_loop(
                call, mix.next_request, rate=rate, duration_s=duration, requests=requests,
                timeout_s=timeout_s, max_in_flight=max_in_flight)
            return LoadReport(target, "open-loop", recorder, elapsed, offered_rate=rate, scheduled=scheduled,
                              max_send_lag_s=lag, options=options, started_at=started_at)
        recorder, elapsed, started = await drive_closed_loop(
            call, mix.next_request, concurrency=concurrency, duration_s=duration, requests=requests)
        return LoadReport(target, "closed-loop", recorder, elapsed, concurrency=concurrency, scheduled=started,
                          options=options, started_at=started_at)
    finally:
        await asyncio.gather(*(c.close() for c in channels))


async def _wait_ready(channels: Iterable[grpc.aio.Channel], timeout_s: float) -> None:
    try:
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), timeout_s)
    except asyncio.TimeoutError:
        print(f"lmrec loadtest: channels not ready after {timeout_s:g} s; running anyway, "
              "failures will be counted", file=sys.stderr)


# --------------------------------------------------------------------------------------------------
# Command line


def is_loopback_target(target: str) -> bool:
    """True for unix sockets, localhost and loopback addresses (IPv4 or IPv6, optionally grpc-scheme'd)."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    for scheme in ("ipv4:", "ipv6:", "dns:///", "dns:"):
        if target.startswith(scheme):
            target = target[len(scheme):]
            break
    if target.startswith("["):
        host = target[1:target.find("]")] if "]" in target else target[1:]
    elif target.count(":") == 1:
        host = target.split(":", 1)[0]
    else:
        host = target  # a bare IPv6 address or a name without a port
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def rates_arg(text: str) -> list[float]:
    """argparse type for `--rates 5,10,20`: positive offered rates, sorted and distinct."""
    try:
        rates = sorted({float(x) for x in text.split(",") if x.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"comma-separated numbers expected: {exc}") from None
    if not rates or rates[0] <= 0:
        raise argparse.ArgumentTypeError(f"positive rates expected, got {text}")
    return rates


def add_rate_sweep_arguments(parser: argparse.ArgumentParser, rates: str, duration: float) -> None:
    """Flags the rate-sweep benchmarks (bench/recommend_latency.py, bench/e2e_load_curve.py) share."""
    parser.add_argument("--target", default=GATEWAY_TARGET)
    parser.add_argument("--allow-remote", action="store_true")
    parser.add_argument("--rates", type=rates_arg, default=rates_arg(rates), help="offered req/s, comma-separated")
    parser.add_argument("--duration", type=float, default=duration, help="seconds per rate")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds at the lowest rate, not reported")
    parser.add_argument("--timeout", type=float, default=5.0, help="per-call deadline, seconds")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--data", help="dataset for the request mix (default: the loadtest default)")
    parser.add_argument("--seed", type=int, default=0)


def _positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def add_loadtest_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the `lmrec loadtest` flags to `parser`."""
    parser.add_argument("--target", default=DEFAULT_TARGET, help="gateway address (default %(default)s)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a target that is not a loopback address")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--rate", type=_positive_float,
                      help=f"open loop: requests per second (default {DEFAULT_RATE:g} when no --concurrency)")
    mode.add_argument("--concurrency", type=_positive_int, help="closed loop: number of concurrent callers")
    parser.add_argument("--duration", type=_positive_float,
                        help=f"seconds to send for (default {DEFAULT_DURATION_S:g} when no --requests)")
    parser.add_argument("--requests", type=_positive_int, help="number of calls to make")
    parser.add_argument("--timeout", type=_positive_float, default=DEFAULT_TIMEOUT_S,
                        help="per-call deadline in seconds (default %(default)s)")
    parser.add_argument("--max-in-flight", type=_positive_int, default=DEFAULT_MAX_IN_FLIGHT,
                        help="open loop: sends beyond this many outstanding calls are counted as errors "
                             "(default %(default)s)")
    parser.add_argument("--connections", type=_positive_int, default=1,
                        help="gRPC channels to spread calls over (default %(default)s)")
    parser.add_argument("-k", "--k", type=int, default=10, help="items per request (default %(default)s)")
    parser.add_argument("--data", help="dataset for the request mix (default: LMREC_DATA or ../shared/data/ml-100k; "
                                       "synthetic users when that is missing)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the request mix (default %(default)s)")
    parser.add_argument("--cold-share", type=_share, default=MixShares.cold_user,
                        help="share of requests from users never seen (default %(default)s)")
    parser.add_argument("--query-share", type=_share, default=MixShares.query,
                        help="share of requests with a free-text query (default %(default)s)")
    parser.add_argument("--filter-share", type=_share, default=MixShares.genre_filter,
                        help="share of requests with a genre filter (default %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="print a ghz-like JSON report (durations in ns) instead of a summary")


def run_loadtest(args: argparse.Namespace) -> int:
    """Runs `lmrec loadtest`; returns 0 when the run finished (even with failed calls), 2 on bad arguments."""

    def bad(message: str) -> int:
        print(f"lmrec loadtest: error: {message}", file=sys.stderr)
        return 2

    if not is_loopback_target(args.target) and not args.allow_remote:
        return bad(f"{args.target} is not a loopback address; pass --allow-remote to load another machine")
    if not 1 <= args.k <= 1000:
        return bad(f"-k must be in 1..1000, got {args.k}")
    rate, concurrency = args.rate, args.concurrency
    if rate is None and concurrency is None:
        rate = DEFAULT_RATE
    duration, requests = args.duration, args.requests
    if duration is None and requests is None:
        duration = DEFAULT_DURATION_S
    shares = MixShares(cold_user=args.cold_share, query=args.query_share, genre_filter=args.filter_share)
    try:
        mix = default_mix(args.data, shares=shares, k=args.k, seed=args.seed)
    except DatasetError as exc:
        return bad(str(exc))
    report = asyncio.run(run_load(
        args.target, rate=rate, concurrency=concurrency, duration=duration, requests=requests, mix=mix,
        timeout_s=args.timeout, max_in_flight=args.max_in_flight, connections=args.connections))
    if args.json:
        print(json.dumps(report.to_json_dict(), indent=2))
    else:
        print(report.summary_text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (`python -m lmrec_tools.loadtest`); `lmrec loadtest` uses the same two functions."""
    parser = argparse.ArgumentParser(prog="lmrec loadtest", description=__doc__.split("\n\n")[0])
    add_loadtest_arguments(parser)
    return run_loadtest(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
