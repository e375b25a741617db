import argparse
import json

import numpy as np
import pytest

from training import ope

# Six impressions, two requests, slate k=3, logged by ε-greedy with ε=0.2 over a pool of P=2 (ranks 3, 4):
# greedy items have propensity 1-ε = 0.8, pool items ε/P = 0.1.
#            req  pos rank  p0   click
SIX = [("a", 0, 0, 0.8, 1),
       ("a", 1, 1, 0.8, 0),
       ("a", 2, 3, 0.1, 1),   # explored: pool item rank 3 at slot 2
       ("b", 0, 0, 0.8, 0),
       ("b", 1, 4, 0.1, 0),   # explored: pool item rank 4 at slot 1
       ("b", 2, 2, 0.8, 1)]
REQ, POS, RANK, P0, CLICK = (np.array(col) for col in zip(*SIX, strict=True))
# A hand-picked reward model q(rank) for the DR case.
Q = np.array([0.5, 0.2, 0.4, 0.3, 0.1])


def make_log(request_id, position, greedy_rank, propensity, clicked, *, slate_size=3, pool_size=2,
             policy="epsilon", policy_param=0.2, propensity_kind="marginal") -> ope.ImpressionLog:
    n = len(request_id)

    def full(value, dtype):
        return np.full(n, value, dtype=dtype)

    return ope.ImpressionLog(
        request_id=np.asarray(request_id, dtype=object), user_id=full("u", object), item_id=full("i", object),
        position=np.asarray(position, dtype=np.int64), propensity=np.asarray(propensity, dtype=np.float64),
        policy=full(policy, object), policy_param=full(policy_param, np.float64),
        greedy_rank=np.asarray(greedy_rank, dtype=np.int64), slate_size=full(slate_size, np.int64),
        pool_size=full(pool_size, np.int64), propensity_kind=full(propensity_kind, object),
        model_version=full("m1", object), scenario=full("home", object), time_ms=full(0, np.int64),
        clicked=np.asarray(clicked, dtype=np.float64))


def six_rows() -> list[dict]:
    return [{"request_id": req, "user_id": f"u{req}", "item_id": f"i{rank}", "position": pos,
             "propensity": p0, "policy": "epsilon", "policy_param": 0.2, "greedy_rank": rank, "slate_size": 3,
             "pool_size": 2, "propensity_kind": "marginal", "model_version": "m1", "scenario": "home",
             "time_ms": 1000 + i, "clicked": bool(click)}
            for i, (req, pos, rank, p0, click) in enumerate(SIX)]


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_target_probabilities_from_the_logged_row():
    # Greedy shows rank p at slot p only.
    assert ope.greedy_target_probability(RANK, POS).tolist() == [1, 1, 0, 1, 0, 1]
    # ε'=0.5, P'=2: (1-0.5)·[rank == slot] + 0.5/2·[3 <= rank < 5].
    pe = ope.epsilon_target_probability(RANK, POS, 3, 0.5, 2)
    assert pe == pytest.approx([0.5, 0.5, 0.25, 0.5, 0.25, 0.5])
    # P'=1 drops rank 4 from the pool; P'=0 is plain greedy whatever ε'.
    assert ope.epsilon_target_probability(RANK, POS, 3, 0.5, 1) == pytest.approx([0.5, 0.5, 0.5, 0.5, 0, 0.5])
    assert ope.epsilon_target_probability(RANK, POS, 3, 0.5, 0).tolist() == [1, 1, 0, 1, 0, 1]
    # The logging policy itself reproduces the logged propensities.
    assert ope.epsilon_target_probability(RANK, POS, 3, 0.2, 2) == pytest.approx(P0)


def test_hand_computed_ips_snips_dr():
    pe = ope.greedy_target_probability(RANK, POS)
    # w = pe/p0 = [1.25, 1.25, 0, 1.25, 0, 1.25]; clicks on rows 1, 3 and 6, row 3 has w = 0.
    # IPS = (1.25 + 1.25) / 6 = 5/12;  SNIPS = 2.5 / sum(w) = 2.5 / 5 = 0.5.
    assert ope.ips_estimate(CLICK, P0, pe) == pytest.approx(5 / 12)
    assert ope.snips_estimate(CLICK, P0, pe) == pytest.approx(0.5)
    # q_logged = q(rank) = [.5, .2, .3, .5, .1, .4]; q_target = q(slot) = [.5, .2, .4, .5, .2, .4].
    # Terms q_t + w(r - q_l): 0.5+0.625, 0.2-0.25, 0.4, 0.5-0.625, 0.2, 0.4+0.75
    #                       = 1.125, -0.05, 0.4, -0.125, 0.2, 1.15; sum 2.7, DR = 2.7 / 6 = 0.45.
    q_logged, q_target = ope.reward_predictions(Q, RANK, POS, 3, 0.0, 0)
    assert q_logged == pytest.approx([0.5, 0.2, 0.3, 0.5, 0.1, 0.4])
    assert q_target == pytest.approx([0.5, 0.2, 0.4, 0.5, 0.2, 0.4])
    assert ope.dr_estimate(CLICK, P0, pe, q_logged, q_target) == pytest.approx(0.45)
    # ESS = sum(w)^2 / sum(w^2) = 25 / (4 · 1.5625) = 4.
    assert ope.effective_sample_size(ope.importance_weights(P0, pe)) == pytest.approx(4.0)


def test_epsilon_target_reward_prediction_mixes_the_pool():
    # ε'=0.5, P'=2: q_target = 0.5·q(slot) + 0.5·mean(q(3), q(4)) = 0.5·q(slot) + 0.1.
    _, q_target = ope.reward_predictions(Q, RANK, POS, 3, 0.5, 2)
    assert q_target == pytest.approx([0.35, 0.2, 0.3, 0.35, 0.2, 0.3])


def test_reward_model_is_smoothed_toward_the_overall_rate():
    # Overall rate 3/6 = 0.5, prior strength 1: q(g) = (clicks_g + 0.5) / (shows_g + 1).
    # rank 0: 1 of 2 -> 0.5; rank 1: 0 of 1 -> 0.25; rank 2: 1 of 1 -> 0.75; rank 3: 1 of 1 -> 0.75;
    # rank 4: 0 of 1 -> 0.25; rank 5 never shown -> the prior 0.5.
    q = ope.rank_click_rates(RANK, CLICK, 6, prior_strength=1.0)
    assert q == pytest.approx([0.5, 0.25, 0.75, 0.75, 0.25, 0.5])


def test_estimate_reports_sizes_and_refuses_conditional_propensities():
    pe = ope.greedy_target_probability(RANK, POS)
    q_logged, q_target = ope.reward_predictions(Q, RANK, POS, 3, 0.0, 0)
    result = ope.estimate(CLICK, P0, pe, REQ, propensity_kind="marginal", q_logged=q_logged,
                          q_target=q_target, resamples=50)
    assert (result["n_impressions"], result["n_requests"]) == (6, 2)
    assert result["estimators"]["dr"]["estimate"] == pytest.approx(0.45)
    kinds = np.array(["marginal"] * 5 + ["conditional"], dtype=object)
    with pytest.raises(ValueError, match="1 conditional"):
        ope.estimate(CLICK, P0, pe, REQ, propensity_kind=kinds, estimators=("ips",))
    with pytest.raises(ValueError, match="DR"):
        ope.estimate(CLICK, P0, pe, REQ, propensity_kind="marginal")


def test_bootstrap_ci_contains_the_estimate_and_is_seeded():
    rng = np.random.default_rng(3)
    n_requests, k = 400, 4
    clusters = np.repeat(np.arange(n_requests), k)
    reward = (rng.random(n_requests * k) < 0.3).astype(float)
    p0 = rng.choice([0.9, 0.05], size=len(reward))
    pe = (p0 > 0.5).astype(float)
    first = ope.estimate(reward, p0, pe, clusters, propensity_kind="marginal", estimators=("ips", "snips"),
                         seed=7)
    again = ope.estimate(reward, p0, pe, clusters, propensity_kind="marginal", estimators=("ips", "snips"),
                         seed=7)
    other = ope.estimate(reward, p0, pe, clusters, propensity_kind="marginal", estimators=("ips", "snips"),
                         seed=8)
    assert first == again
    assert first["estimators"]["ips"]["ci95"] != other["estimators"]["ips"]["ci95"]
    for name in ("ips", "snips"):
        lo, hi = first["estimators"][name]["ci95"]
        assert lo < first["estimators"][name]["estimate"] < hi


def test_bootstrap_resamples_whole_requests():
    # Every impression of a request shares its click: 5 impressions carry the information of one, so the
    # request-level interval must be about sqrt(5) ≈ 2.2 times the naive per-impression one.
    rng = np.random.default_rng(0)
    per_request = (rng.random(2000) < 0.4).astype(float)
    reward = np.repeat(per_request, 5)
    ones = np.ones_like(reward)
    by_request = ope.cluster_bootstrap_ratios(reward, ones, np.repeat(np.arange(2000), 5), seed=1)[0]
    by_impression = ope.cluster_bootstrap_ratios(reward, ones, np.arange(len(reward)), seed=1)[0]
    ratio = (by_request[1] - by_request[0]) / (by_impression[1] - by_impression[0])
    assert 1.8 < ratio < 2.7


def test_read_log_run_ope_and_main_on_a_jsonl_file(tmp_path, capsys):
    path = tmp_path / "impressions.jsonl"
    write_jsonl(path, six_rows())
    log = ope.read_log(path)
    assert len(log) == 6 and log.clicked.tolist() == CLICK.tolist() and log.request_id.tolist() == list(REQ)
    result = ope.run_ope(path, "greedy", resamples=50, seed=0)
    assert result["estimators"]["ips"]["estimate"] == pytest.approx(5 / 12)
    assert result["estimators"]["snips"]["estimate"] == pytest.approx(0.5)
    assert result["logged_click_rate"]["estimate"] == pytest.approx(0.5)
    assert (result["n_impressions"], result["n_requests"], result["ess"]) == (6, 2, pytest.approx(4.0))

    parser = ope.add_ope_arguments(argparse.ArgumentParser())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(["--ope", str(path), "--ope-target", "epsilon", "--ope-epsilon", "0.2",
                              "--ope-resamples", "20"])
    assert ope.main_ope(args) == 0
    printed = json.loads(capsys.readouterr().out)
    # The target is the logging policy itself: every weight is 1 and IPS is the logged click rate.
    assert printed["estimators"]["ips"]["estimate"] == pytest.approx(0.5)
    assert printed["target"] == {"policy": "epsilon", "epsilon": 0.2, "pool_size": None}

    bad = parser.parse_args(["--ope", str(path), "--ope-target", "epsilon"])
    assert ope.main_ope(bad) == 2
    assert "epsilon" in capsys.readouterr().err


@pytest.mark.parametrize(("field", "value", "message"), [
    ("propensity", 0.0, "propensity"),
    ("propensity", 1.5, "propensity"),
    ("position", 3, "position"),
    ("position", True, "position"),
    ("policy", "thompson", "policy"),
    ("propensity_kind", "joint", "propensity_kind"),
    ("clicked", "yes", "clicked"),
    ("request_id", "", "request_id"),
])
def test_read_log_names_the_bad_line_and_field(tmp_path, field, value, message):
    rows = six_rows()
    rows[2][field] = value
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, rows)
    with pytest.raises(ValueError, match=f"line 3: {message}"):
        ope.read_log(path)


def test_read_log_rejects_missing_fields_and_broken_json(tmp_path):
    rows = six_rows()
    del rows[4]["greedy_rank"]
    path = tmp_path / "missing.jsonl"
    write_jsonl(path, rows)
    with pytest.raises(ValueError, match="line 5: greedy_rank: missing"):
        ope.read_log(path)
    path.write_text(json.dumps(six_rows()[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        ope.read_log(path)


def test_run_ope_refuses_softmax_conditional_propensities(tmp_path):
    rows = six_rows()
    rows[0].update(policy="softmax", policy_param=0.5, propensity_kind="conditional")
    path = tmp_path / "softmax.jsonl"
    write_jsonl(path, rows)
    with pytest.raises(ValueError, match="conditional"):
        ope.run_ope(path, "greedy", resamples=10)


# ---------------------------------------------------------------- simulation

K, POOL, EPSILON = 5, 10, 0.1


def click_probability(greedy_rank: np.ndarray) -> np.ndarray:
    """Users click better-ranked items more: 0.5 at rank 0, ~0.14 at rank 4, ~0.06 deep in the pool."""
    return 0.5 / (1.0 + greedy_rank) ** 0.8


def simulate_epsilon_log(n_requests: int, seed: int) -> ope.ImpressionLog:
    """ε-greedy serving as the gateway does it: each slot explores with probability ε and takes the next
    item of a random ordering of the pool r[K : K+POOL] (so explored slots never repeat an item)."""
    rng = np.random.default_rng(seed)
    explored = rng.random((n_requests, K)) < EPSILON
    pool_order = np.argsort(rng.random((n_requests, POOL)), axis=1)
    nth_explored = np.maximum(np.cumsum(explored, axis=1) - 1, 0)
    pool_rank = K + np.take_along_axis(pool_order, nth_explored, axis=1)
    rank = np.where(explored, pool_rank, np.arange(K))
    propensity = np.where(explored, EPSILON / POOL, 1.0 - EPSILON)
    clicked = rng.random((n_requests, K)) < click_probability(rank)
    return make_log(np.repeat(np.arange(n_requests), K), np.tile(np.arange(K), n_requests), rank.ravel(),
                    propensity.ravel(), clicked.ravel(), slate_size=K, pool_size=POOL, policy_param=EPSILON)


def test_ope_of_greedy_on_an_epsilon_log_matches_greedy_served_on_policy():
    log = simulate_epsilon_log(20_000, seed=11)
    result = ope.evaluate_log(log, "greedy", seed=0)

    # Greedy served directly to other users (slot p always shows rank p), five times as many so the
    # comparison is dominated by the OPE interval under test, not by the on-policy run's own noise.
    rng = np.random.default_rng(12)
    greedy_clicks = rng.random((100_000, K)) < click_probability(np.arange(K))
    on_policy = ope.on_policy_value(greedy_clicks.ravel(), np.repeat(np.arange(100_000), K), resamples=200)
    truth = float(click_probability(np.arange(K)).mean())  # 0.259

    logged = result["logged_click_rate"]["estimate"]  # ε-greedy's own rate: ~0.241, well below greedy
    assert result["warnings"] == []
    for name in ope.ESTIMATORS:
        lo, hi = result["estimators"][name]["ci95"]
        assert lo <= on_policy["estimate"] <= hi, (name, lo, hi, on_policy)
        assert lo <= truth <= hi, (name, lo, hi, truth)
        # The correction is what passes: the naive logged rate lies outside every interval.
        assert not lo <= logged <= hi, (name, lo, hi, logged)
    assert on_policy["ci95"][0] <= truth <= on_policy["ci95"][1]
    # Greedy puts weight only on the ~90% unexplored slots: ESS ≈ 0.9 · 100k.
    assert result["ess"] == pytest.approx(0.9 * 100_000, rel=0.02)


def test_ope_of_the_logging_policy_returns_the_logged_rate_exactly():
    log = simulate_epsilon_log(2_000, seed=5)
    result = ope.evaluate_log(log, "epsilon", epsilon=EPSILON, resamples=100)
    logged = result["logged_click_rate"]["estimate"]
    assert result["estimators"]["ips"]["estimate"] == pytest.approx(logged, abs=1e-12)
    assert result["estimators"]["snips"]["estimate"] == pytest.approx(logged, abs=1e-12)
    assert result["ess"] == pytest.approx(len(log))


def test_epsilon_target_on_a_greedy_log_warns_about_support():
    log = make_log(REQ, POS, [0, 1, 2, 0, 1, 2], np.ones(6), CLICK, pool_size=0, policy="greedy",
                   policy_param=0.0)
    result = ope.evaluate_log(log, "epsilon", epsilon=0.3, pool_size=4, resamples=20)
    assert result["warnings"] and "never" in result["warnings"][0]
