"""Accounting of `lmrec loadtest`: schedule math, coordinated omission, percentiles, status counts, JSON."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import time

import grpc
import pytest

from lmrec_data import request_mix
from lmrec_tools import loadtest
from lmrec_data.datasets import resolve_data_path
from lmrec_data.request_mix import MixShares, RequestMix
from lmrec_tools.loadtest import drive_closed_loop, drive_open_loop, planned_count
from lmrec_tools.loadtest_report import CLIENT_INFLIGHT_CAP, OK, LatencyRecorder, LoadReport
from lmrec.v1 import gateway_service_pb2 as pb
from lmrec.v1 import gateway_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.timeout(60)


def _mix(**kwargs) -> RequestMix:
    return RequestMix.synthetic(**kwargs)


# --- schedule math -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "duration", "requests", "expected"),
    [
        (20, 3, None, 60),  # sends at 0, 0.05, ..., 2.95 s
        (20, 3, 10, 10),  # the request budget binds first
        (20, None, 7, 7),
        (3, 1, None, 3),
        (3, 1.01, None, 4),  # the send due at exactly 1.0 s is inside a 1.01 s window
        (0.5, 3, None, 2),  # sends at 0 and 2 s
        (1000, 0.0005, None, 1),
    ],
)
def test_planned_count(rate, duration, requests, expected):
    assert planned_count(rate, duration, requests) == expected


def test_planned_count_needs_a_bound_and_a_positive_rate():
    with pytest.raises(ValueError):
        planned_count(10, None, None)
    with pytest.raises(ValueError):
        planned_count(0, 1, None)


def test_scheduled_offsets_are_evenly_spaced_from_the_start():
    assert [loadtest.scheduled_offset(i, 4) for i in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]


# --- open loop: sends keep their schedule, latency counts from the schedule ----------------------


def _fixed_request() -> pb.RecommendRequest:
    return pb.RecommendRequest(user_id="1", k=10)


def test_open_loop_keeps_sending_while_answers_are_slow():
    """A 300 ms service must not slow a 50 req/s sender: sends do not wait for answers.

    Checked by what a closed-loop sender could not do (many calls in flight at once, the run far shorter
    than 20 x 0.3 s), with bounds wide enough for a loaded CI machine that delays the event loop.
    """
    send_times: list[float] = []
    in_flight, most_in_flight = 0, 0

    async def slow_call(request):
        nonlocal in_flight, most_in_flight
        send_times.append(time.perf_counter())
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        await asyncio.sleep(0.3)
        in_flight -= 1
        return OK, False, ""

    async def go():
        return await drive_open_loop(slow_call, _fixed_request, rate=50, requests=20, timeout_s=5)

    recorder, elapsed, max_lag, scheduled = asyncio.run(go())
    assert scheduled == 20 and recorder.count == 20
    # At 50 req/s, ~15 calls of 0.3 s overlap; a sender that waited for answers would have 1.
    assert most_in_flight >= 8
    # The last send is due at 0.38 s; sent one after another, it would go out at 5.7 s.
    assert send_times[-1] - send_times[0] < 2.0
    assert elapsed < 3.0
    # Latency counts from the scheduled time: never below the service's 0.3 s.
    assert 290_000 <= recorder.percentile_us(50) <= 1_500_000


def test_open_loop_counts_latency_from_the_scheduled_time_when_the_sender_falls_behind():
    """Stall the event loop for 250 ms: sends due during the stall go out late, and that lag is latency.

    A tool that measured from the actual send would report ~0 ms for all of them (coordinated omission).
    """
    calls = itertools.count()

    async def call(request):
        if next(calls) == 0:
            time.sleep(0.25)  # blocks the whole loop, like a GC pause or a busy client
        return OK, False, ""

    async def go():
        return await drive_open_loop(call, _fixed_request, rate=100, requests=20, timeout_s=5)

    recorder, _, max_lag, _ = asyncio.run(go())
    assert recorder.count == 20
    assert max_lag >= 0.2
    # The first send is due at 0 and answered after the 250 ms stall; the next ones are due at 10, 20, ...
    # ms and sent only after it: about 240, 230, ... ms late.
    assert recorder.max_us >= 240_000
    assert recorder.percentile_us(50) >= 100_000


def test_open_loop_in_flight_cap_counts_overflow_as_errors_at_the_timeout():
    async def stuck_call(request):
        await asyncio.sleep(0.3)
        return OK, False, ""

    async def go():
        return await drive_open_loop(stuck_call, _fixed_request, rate=100, requests=10, timeout_s=0.5,
                                     max_in_flight=2)

    recorder, _, _, scheduled = asyncio.run(go())
    assert scheduled == 10
    assert recorder.count == 10, "refused sends must not vanish from the totals"
    assert recorder.status_counts == {OK: 2, CLIENT_INFLIGHT_CAP: 8}
    assert recorder.errors == 8
    assert recorder.max_us == pytest.approx(500_000, rel=0.001)


def test_open_loop_surfaces_a_bug_in_the_call_function():
    async def broken(request):
        raise RuntimeError("bug in the client")

    with pytest.raises(RuntimeError, match="bug in the client"):
        asyncio.run(drive_open_loop(broken, _fixed_request, rate=100, requests=5))


def test_closed_loop_never_exceeds_its_concurrency_and_honours_the_request_budget():
    active = 0
    peak = 0

    async def call(request):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return OK, False, ""

    recorder, _, started = asyncio.run(drive_closed_loop(call, _fixed_request, concurrency=3, requests=30))
    assert started == 30 and recorder.count == 30
    assert peak == 3
    assert recorder.percentile_us(50) >= 9_000


def test_closed_loop_stops_at_the_duration():
    async def call(request):
        await asyncio.sleep(0.02)
        return OK, False, ""

    recorder, elapsed, _ = asyncio.run(drive_closed_loop(call, _fixed_request, concurrency=2, duration_s=0.3))
    assert 0.28 <= elapsed < 1.0
    assert 10 <= recorder.count <= 32


# --- histogram and status accounting -------------------------------------------------------------


def test_percentiles_match_a_known_distribution_within_hdr_precision():
    recorder = LatencyRecorder()
    for ms in range(1, 1001):
        recorder.record(ms * 1000)
    assert recorder.count == 1000
    assert recorder.percentile_us(50) == pytest.approx(500_000, rel=0.001)
    assert recorder.percentile_us(90) == pytest.approx(900_000, rel=0.001)
    assert recorder.percentile_us(99) == pytest.approx(990_000, rel=0.001)
    assert recorder.percentile_us(99.9) == pytest.approx(999_000, rel=0.001)
    assert recorder.max_us == 1_000_000 and recorder.min_us == 1000
    assert recorder.mean_us == pytest.approx(500_500)


def test_out_of_range_latencies_are_clamped_and_counted():
    recorder = LatencyRecorder()
    recorder.record(0)
    recorder.record(120e6)
    assert recorder.count == 2 and recorder.clamped == 2
    assert recorder.max_us == 60_000_000


def test_errors_and_degraded_answers_are_counted_and_errors_stay_in_the_histogram():
    recorder = LatencyRecorder()
    recorder.record(1_000, OK)
    recorder.record(2_000, OK, degraded=True)
    recorder.record(5_000_000, "DEADLINE_EXCEEDED", message="Deadline Exceeded")
    recorder.record(3_000, "UNAVAILABLE", message="ranker down")
    recorder.record(3_000, "UNAVAILABLE", message="ranker down")
    assert recorder.status_counts == {"OK": 2, "DEADLINE_EXCEEDED": 1, "UNAVAILABLE": 2}
    assert recorder.count == 5 and recorder.errors == 3 and recorder.degraded == 1
    assert recorder.max_us == 5_000_000, "a timed-out call's latency must reach the percentiles"
    assert recorder.error_messages["UNAVAILABLE: ranker down"] == 2


def test_distinct_error_messages_are_bounded():
    recorder = LatencyRecorder()
    for i in range(100):
        recorder.record(10, "INTERNAL", message=f"request id {i}")
    assert len(recorder.error_messages) == 21
    assert sum(recorder.error_messages.values()) == 100


def test_json_report_has_the_ghz_like_shape():
    recorder = LatencyRecorder()
    for ms in (1, 2, 3, 4, 100):
        recorder.record(ms * 1000)
    recorder.record(7000, "UNAVAILABLE", message="x")
    recorder.record(2000, OK, degraded=True)
    started = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    report = LoadReport("127.0.0.1:1", "open-loop", recorder, elapsed_s=2.0, offered_rate=3.5, scheduled=7,
                        started_at=started)
    doc = json.loads(json.dumps(report.to_json_dict()))
    assert doc["date"] == "2026-01-02T03:04:05+00:00"  # ghz's run start, RFC 3339
    assert doc["count"] == 7 and doc["scheduled"] == 7
    assert doc["total"] == 2_000_000_000  # nanoseconds, like ghz
    assert doc["fastest"] == 1_000_000 and doc["slowest"] == 100_000_000
    assert doc["average"] == pytest.approx((1 + 2 + 3 + 4 + 100 + 7 + 2) / 7 * 1e6, rel=1e-6)
    assert doc["rps"] == pytest.approx(3.5)
    assert doc["mode"] == "open-loop" and doc["offeredRate"] == 3.5
    assert doc["degraded"] == 1 and doc["errors"] == 1
    assert doc["statusCodeDistribution"] == {"OK": 6, "UNAVAILABLE": 1}
    percentages = [row["percentage"] for row in doc["latencyDistribution"]]
    assert {50, 90, 99, 99.9} <= set(percentages)
    assert all(isinstance(row["latency"], int) for row in doc["latencyDistribution"])
    assert set(doc["latencyMs"]) == {"p50", "p90", "p99", "p99.9", "max", "mean"}
    assert doc["latencyMs"]["max"] == 100.0
    buckets = doc["histogram"]
    assert len(buckets) == 10
    assert sum(b["count"] for b in buckets) == 7
    assert sum(b["frequency"] for b in buckets) == pytest.approx(1.0)
    assert buckets[-1]["mark"] == pytest.approx(0.1)  # seconds
    assert [b["mark"] for b in buckets] == sorted(b["mark"] for b in buckets)
    assert "open loop at 3.5 req/s" in report.summary_text()


def test_empty_report_is_well_formed():
    report = LoadReport("127.0.0.1:1", "closed-loop", LatencyRecorder(), elapsed_s=0.0, concurrency=1)
    doc = report.to_json_dict()
    assert doc["count"] == 0 and doc["histogram"] == [] and doc["rps"] == 0.0
    report.summary_text()


# --- request mix ---------------------------------------------------------------------------------


def test_mix_is_deterministic_for_a_seed_and_differs_across_seeds():
    first = _mix(seed=7)
    second = _mix(seed=7)
    run_a = [first.next_request().SerializeToString() for _ in range(200)]
    run_b = [second.next_request().SerializeToString() for _ in range(200)]
    other = _mix(seed=8)
    run_c = [other.next_request().SerializeToString() for _ in range(200)]
    assert run_a == run_b
    assert run_a != run_c


def test_mix_shares_are_respected():
    mix = RequestMix(["u1", "u2", "u3"], [1, 1, 8], ["Comedy", "Drama"], None,
                     shares=MixShares(cold_user=0.25, query=0.4, genre_filter=0.1), k=5, seed=1)
    requests = [mix.next_request() for _ in range(4000)]
    cold = [r for r in requests if r.user_id not in {"u1", "u2", "u3"}]
    assert len(cold) / 4000 == pytest.approx(0.25, abs=0.03)
    assert len({r.user_id for r in cold}) == len(cold), "every cold request is a new user"
    assert sum(bool(r.query) for r in requests) / 4000 == pytest.approx(0.4, abs=0.03)
    filtered = [r for r in requests if r.filters]
    assert len(filtered) / 4000 == pytest.approx(0.1, abs=0.02)
    assert all(f.key == "genre" and len(f.values) == 1 for r in filtered for f in r.filters)
    assert all(r.k == 5 for r in requests)
    known = [r.user_id for r in requests if r.user_id in {"u1", "u2", "u3"}]
    assert known.count("u3") / len(known) == pytest.approx(0.8, abs=0.04), "users are weighted by activity"
    assert all(r.query in request_mix.QUERIES for r in requests if r.query)


def test_builtin_queries_are_plenty_and_distinct():
    assert len(request_mix.QUERIES) >= 25 and len(set(request_mix.QUERIES)) == len(request_mix.QUERIES)


def test_mix_from_ml100k_uses_its_users_and_genres(ml100k):
    mix = RequestMix.from_dataset(resolve_data_path(), seed=3)
    assert len(mix.known_users) == 943
    assert "Animation" in mix.genres and "unknown" not in mix.genres
    requests = [mix.next_request() for _ in range(500)]
    assert any(r.user_id in set(mix.known_users) for r in requests)
    assert any(r.user_id.startswith("loadtest-cold-") for r in requests)


def test_default_mix_falls_back_to_synthetic_only_when_no_data_was_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LMREC_DATA", str(tmp_path / "missing"))
    mix = request_mix.default_mix()
    assert mix.source == "synthetic"
    assert "synthetic" in capsys.readouterr().err
    with pytest.raises(request_mix.DatasetError):
        request_mix.default_mix(str(tmp_path / "missing"))


# --- a real gRPC round trip on 127.0.0.1:0 -------------------------------------------------------


class _TinyGateway(pb_grpc.GatewayServiceServicer):
    """Answers instantly; user "fail" gets UNAVAILABLE, user "slow" DEADLINE_EXCEEDED, "deg" degraded."""

    async def Recommend(self, request, context):
        if request.user_id == "fail":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "ranker down")
        if request.user_id == "slow":
            await asyncio.sleep(1.0)
        items = [pb.RecommendedItem(item_id=str(i), score=1.0 - i / 100, title=f"t{i}") for i in range(request.k)]
        return pb.RecommendResponse(items=items, model_version="tiny", degraded=request.user_id == "deg")


async def _with_tiny_server(body):
    server = grpc.aio.server()
    pb_grpc.add_GatewayServiceServicer_to_server(_TinyGateway(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        return await body(f"127.0.0.1:{port}")
    finally:
        await server.stop(None)


def _tiny_mix(seed=5):
    return RequestMix(["ok", "fail", "slow", "deg"], None, ["Comedy"], None,
                      shares=MixShares(cold_user=0.0, query=0.5, genre_filter=0.5), k=4, seed=seed)


def test_run_load_against_a_real_grpc_server_counts_every_status():
    expected = {"ok": 0, "fail": 0, "slow": 0, "deg": 0}
    replay = _tiny_mix()
    for _ in range(40):
        expected[replay.next_request().user_id] += 1

    async def body(target):
        return await loadtest.run_load(target, rate=200, requests=40, mix=_tiny_mix(), timeout_s=0.2)

    report = asyncio.run(_with_tiny_server(body))
    assert report.count == 40 and report.mode == "open-loop"
    assert report.status_counts.get("UNAVAILABLE", 0) == expected["fail"]
    assert report.status_counts.get("DEADLINE_EXCEEDED", 0) == expected["slow"]
    assert report.status_counts.get("OK", 0) == expected["ok"] + expected["deg"]
    assert report.degraded == expected["deg"]
    assert report.recorder.max_us >= 200_000, "timed-out calls are in the histogram at >= their deadline"
    assert report.to_json_dict()["date"] is not None


def test_run_load_closed_loop_over_several_connections():
    async def body(target):
        mix = RequestMix(["ok"], None, [], None, shares=MixShares(cold_user=0.0, genre_filter=0.0), k=3)
        return await loadtest.run_load(target, concurrency=4, requests=60, mix=mix, connections=2)

    report = asyncio.run(_with_tiny_server(body))
    assert report.count == 60 and report.errors == 0 and report.mode == "closed-loop"


def test_run_load_rejects_inconsistent_arguments():
    with pytest.raises(ValueError):
        asyncio.run(loadtest.run_load(rate=1, concurrency=1, requests=1, mix=_tiny_mix()))
    with pytest.raises(ValueError):
        asyncio.run(loadtest.run_load(rate=1, mix=_tiny_mix()))


# --- command line --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmrec loadtest")
    loadtest.add_loadtest_arguments(parser)
    return parser


@pytest.mark.parametrize(
    ("target", "loopback"),
    [
        ("127.0.0.1:50051", True), ("localhost:50051", True), ("[::1]:50051", True),
        ("ipv4:127.0.0.2:1", True), ("unix:/tmp/x.sock", True), ("dns:///localhost:50051", True),
        ("10.0.0.5:50051", False), ("example.com:443", False), ("[2001:db8::1]:50051", False),
    ],
)
def test_loopback_detection(target, loopback):
    assert loadtest.is_loopback_target(target) is loopback


def test_cli_refuses_remote_targets_without_allow_remote(capsys):
    args = _parser().parse_args(["--target", "10.0.0.5:50051", "--requests", "1"])
    assert loadtest.run_loadtest(args) == 2
    assert "--allow-remote" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["--rate", "5", "--concurrency", "2"], ["--rate", "0"], ["--rate", "-3"], ["--requests", "0"],
     ["--cold-share", "1.5"], ["--duration", "nan"]],
)
def test_cli_rejects_bad_arguments_with_exit_code_2(argv):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(argv)
    assert exc.value.code == 2


def test_cli_treats_a_missing_named_dataset_as_a_bad_argument(tmp_path, capsys):
    args = _parser().parse_args(["--requests", "1", "--data", str(tmp_path / "none")])
    assert loadtest.run_loadtest(args) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_json_report_against_a_real_server(capsys):
    exit_codes = []

    def run_cli_against(target):
        args = _parser().parse_args(["--target", target, "--rate", "100", "--requests", "15", "--json",
                                     "--cold-share", "1.0", "--seed", "4"])
        exit_codes.append(loadtest.run_loadtest(args))

    async def serve_and_run(target):
        # run_loadtest owns its event loop, so it runs in a thread while this loop serves.
        await asyncio.to_thread(run_cli_against, target)

    asyncio.run(_with_tiny_server(serve_and_run))
    assert exit_codes == [0]
    doc = json.loads(capsys.readouterr().out)
    assert doc["count"] == 15 and doc["statusCodeDistribution"] == {"OK": 15}
    assert doc["mode"] == "open-loop" and doc["offeredRate"] == 100.0
