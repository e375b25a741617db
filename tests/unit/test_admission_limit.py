"""The adaptive concurrency limit: it holds at the ceiling while latency stays near the no-load figure,
shrinks toward the concurrency the machine absorbs when latency climbs (never below its floor), grows
back when it falls, and forgets an old no-load figure after its memory."""

from __future__ import annotations

from lmrec.admission import AdaptiveLimit


def run(limit: AdaptiveLimit, latency_at, windows: int) -> list[int]:
    seen = []
    for _ in range(windows):
        for _ in range(limit.window):
            limit.observe(latency_at(limit.current))
        seen.append(limit.current)
    return seen


def test_queueing_latency_brings_the_limit_down_to_what_the_machine_absorbs_and_back_up():
    # A server that does 4 calls at once in 10 ms; more in flight queue: latency grows with the excess.
    def latency(in_flight: int) -> float:
        return 0.010 * max(1.0, in_flight / 4)

    limit = AdaptiveLimit(ceiling=64, tolerance=3.0, floor=2)
    run(limit, lambda n: 0.010, 3)  # light load first: the no-load latency is learnt
    assert limit.no_load_s == 0.010 and limit.current == 64
    limits = run(limit, latency, 80)
    assert 10 <= limits[-1] <= 16, limits  # latency held near 3x the no-load latency: about 12 in flight
    assert latency(limit.current) <= 3.5 * 0.010
    assert run(limit, lambda in_flight: 0.010, 80)[-1] == 64  # the overload ends: back to the ceiling


def test_the_floor_is_never_crossed_and_flat_latency_keeps_the_ceiling():
    assert run(AdaptiveLimit(ceiling=16), lambda n: 0.02, 10) == [16] * 10
    limit = AdaptiveLimit(ceiling=64, floor=8)
    run(limit, lambda n: 0.01, 2)
    assert min(run(limit, lambda n: 0.01 * n, 100)) == 8
    assert AdaptiveLimit(ceiling=4).current == 4 and not AdaptiveLimit(ceiling=4).adaptive
    assert not AdaptiveLimit(ceiling=64, tolerance=0).adaptive


def test_the_no_load_figure_is_a_sliding_minimum_that_forgets():
    now = [0.0]
    limit = AdaptiveLimit(ceiling=64, window=4, memory_s=10, clock=lambda: now[0])
    run(limit, lambda n: 0.01, 1)
    now[0] = 11
    run(limit, lambda n: 0.05, 1)  # a new period: the old minimum is still remembered
    assert limit.no_load_s == 0.01
    now[0] = 22
    run(limit, lambda n: 0.05, 1)  # two periods on: only the slower model's latency is left
    assert limit.no_load_s == 0.05
