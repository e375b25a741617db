"""The policy stage against the real system with ML-100K loaded: feedback that means what it says,
reasons on every item, diversity, exploration with logged propensities, and per-scenario policies."""

from __future__ import annotations

import uuid

import grpc
import numpy as np
import pytest

from lmrec.v1 import common_pb2, gateway_service_pb2 as gw

pytestmark = pytest.mark.integration


def recommend(system, **kwargs) -> gw.RecommendResponse:
    return system.stub.Recommend(gw.RecommendRequest(**kwargs), timeout=30)


def fresh_user() -> str:
    return f"policy-{uuid.uuid4().hex[:10]}"


def by_genre(ml100k) -> dict[str, set[str]]:
    return {i.item_id: set(i.attributes.get("genre", [])) for i in ml100k.items}


def popular(ml100k, want, avoid=(), n=10) -> list[str]:
    counts: dict[str, int] = {}
    for x in ml100k.interactions:
        counts[x.item_id] = counts.get(x.item_id, 0) + 1
    genres = by_genre(ml100k)
    ranked = sorted(genres, key=lambda i: -counts.get(i, 0))
    return [i for i in ranked if want in genres[i] and not genres[i] & set(avoid)][:n]


def feed(system, user, items, event_type, value=0.0):
    system.stub.RecordFeedback(gw.RecordFeedbackRequest(events=[
        gw.FeedbackEvent(user_id=user, item_id=i, event_type=event_type, value=value) for i in items]), timeout=30)


def horror_share(system, ml100k, user) -> tuple[int, list[str]]:
    genres = by_genre(ml100k)
    ids = [i.item_id for i in recommend(system, user_id=user, k=20).items]
    return sum("Horror" in genres[i] for i in ids), ids


def test_dismissing_a_genre_pushes_it_down_and_a_rating_of_one_reads_the_same(lmrec_system, ml100k):
    comedies = popular(ml100k, "Comedy", avoid={"Horror"}, n=8)
    horror = popular(ml100k, "Horror", n=14)
    liked_horror, dismissed = horror[:2], horror[2:12]
    for negative in (gw.EVENT_TYPE_DISMISS, gw.EVENT_TYPE_RATING):
        user = fresh_user()
        feed(lmrec_system, user, comedies + liked_horror, gw.EVENT_TYPE_CLICK)
        before, _ = horror_share(lmrec_system, ml100k, user)
        feed(lmrec_system, user, dismissed, negative, value=1.0)
        after, ids = horror_share(lmrec_system, ml100k, user)
        assert before > 0 and after < before, (negative, before, after)
        assert not set(ids) & set(dismissed)
        if negative == gw.EVENT_TYPE_DISMISS:
            dismissed_answer = ids
    assert ids == dismissed_answer  # a rating of 1 is a dismissal
    # A user who only clicked comedies: dismissals never raise the genre's share (the reported bug).
    user = fresh_user()
    feed(lmrec_system, user, comedies, gw.EVENT_TYPE_CLICK)
    before, _ = horror_share(lmrec_system, ml100k, user)
    feed(lmrec_system, user, horror[:10], gw.EVENT_TYPE_DISMISS)
    assert horror_share(lmrec_system, ml100k, user)[0] <= before


def test_a_purchase_weighs_more_than_a_view(lmrec_system, ml100k):
    comedies = popular(ml100k, "Comedy", avoid={"Horror"}, n=6)
    horror = popular(ml100k, "Horror", n=1)
    scores = {}
    for name, event_type in (("view", gw.EVENT_TYPE_VIEW), ("purchase", gw.EVENT_TYPE_PURCHASE)):
        user = fresh_user()
        feed(lmrec_system, user, comedies, gw.EVENT_TYPE_CLICK)
        feed(lmrec_system, user, horror, event_type)
        answer = recommend(lmrec_system, user_id=user, k=5,
                           filters=[common_pb2.AttributeFilter(key="genre", values=["Horror"])])
        scores[name] = np.mean([i.score for i in answer.items])
    assert scores["purchase"] > scores["view"]


def test_every_item_has_a_reason_that_matches_what_shaped_it(lmrec_system, ml100k):
    history = {x.item_id for x in ml100k.interactions if x.user_id == "1"}
    plain = recommend(lmrec_system, user_id="1", k=10)
    for item in plain.items:
        assert item.reasons, item
        top = item.reasons[0]
        assert top.kind == gw.REASON_KIND_HISTORY_ITEM and top.item_id in history and top.weight > 0
        assert top.text.startswith("Because you liked ")
    asked = recommend(lmrec_system, user_id="1", k=10, query="scary horror movie",
                      filters=[common_pb2.AttributeFilter(key="genre", values=["Horror", "Thriller"])])
    for item in asked.items:
        kinds = [r.kind for r in item.reasons]
        assert gw.REASON_KIND_QUERY in kinds and gw.REASON_KIND_ATTRIBUTE in kinds
        assert any("scary horror movie" in r.text for r in item.reasons)
    cold = recommend(lmrec_system, user_id=fresh_user(), k=5)
    assert cold.source == "popularity"
    assert all(gw.REASON_KIND_POPULAR in [r.kind for r in i.reasons] for i in cold.items)


def test_diversity_zero_is_todays_list_and_more_diversity_spreads_the_list(lmrec_system):
    from lmrec.v1 import ranking_service_pb2 as rk, ranking_service_pb2_grpc as rk_grpc

    def ild(answer) -> float:
        """Mean pairwise cosine distance of the items' text vectors (what the MMR re-ranking trades for)."""
        items = lmrec_system.stub.GetItems(gw.GetItemsRequest(item_ids=[i.item_id for i in answer.items]),
                                           timeout=30).items
        with grpc.insecure_channel(lmrec_system.group.services["ranking"].address) as channel:
            encoded = rk_grpc.RankingServiceStub(channel).Encode(
                rk.EncodeRequest(inputs=[rk.EncodeInput(text=i.text) for i in items]), timeout=30)
        vectors = np.array([v.values for v in encoded.vectors])
        similarity = vectors @ vectors.T
        n = len(vectors)
        return float((1 - similarity)[np.triu_indices(n, 1)].mean())

    plain = recommend(lmrec_system, user_id="7", k=10)
    zero = recommend(lmrec_system, user_id="7", k=10, diversity=0.0)
    assert [i.item_id for i in zero.items] == [i.item_id for i in plain.items]
    diverse = recommend(lmrec_system, user_id="7", k=10, diversity=0.5)
    assert ild(diverse) > ild(plain)
    assert all(i.reasons for i in diverse.items)
    assert not diverse.degraded


def test_exploration_logs_propensities_that_join_to_clicks_and_erase_with_the_user(lmrec_system):
    user = fresh_user()
    feed(lmrec_system, user, ["1", "50", "100", "181"], gw.EVENT_TYPE_CLICK)
    exploration = gw.Exploration(policy=gw.EXPLORATION_POLICY_EPSILON, epsilon=0.5)
    first = recommend(lmrec_system, user_id=user, k=10, exploration=exploration, request_id="req-explore-1")
    again = recommend(lmrec_system, user_id=user, k=10, exploration=exploration, request_id="req-explore-1")
    assert [i.item_id for i in first.items] == [i.item_id for i in again.items]  # seeded by the request id
    assert first.request_id == "req-explore-1" and first.policy == "epsilon"
    greedy = recommend(lmrec_system, user_id=user, k=10)
    assert greedy.policy == "greedy" and all(i.propensity == 1.0 for i in greedy.items) and greedy.request_id
    explored = [i for i in first.items if gw.REASON_KIND_EXPLORATION in [r.kind for r in i.reasons]]
    assert explored and all(i.propensity < 0.5 for i in explored)
    kept = [i for i in first.items if i not in explored]
    assert all(i.propensity == pytest.approx(0.5) for i in kept)
    assert [i.position for i in first.items] == list(range(10))
    clicked = first.items[0].item_id
    lmrec_system.stub.RecordFeedback(gw.RecordFeedbackRequest(events=[gw.FeedbackEvent(
        user_id=user, item_id=clicked, event_type=gw.EVENT_TYPE_CLICK, request_id=first.request_id)]), timeout=30)
    history = lmrec_system.stub.GetUserHistory(gw.GetUserHistoryRequest(user_id=user), timeout=30)
    shown = [(i.request_id, i.item_id, i.position) for i in history.impressions]
    assert [(first.request_id, i.item_id, i.position) for i in first.items] == shown[:10]
    assert len(shown) == 30
    assert history.events[-1].request_id == first.request_id
    erased = lmrec_system.stub.DeleteUserData(gw.DeleteUserDataRequest(user_id=user), timeout=30)
    assert erased.deleted_impression_count == 30 and erased.deleted_event_count == 5
    assert not lmrec_system.stub.GetUserHistory(gw.GetUserHistoryRequest(user_id=user), timeout=30).impressions


def test_softmax_exploration_samples_by_score(lmrec_system):
    answers = [recommend(lmrec_system, user_id="1", k=10, request_id=f"soft-{n}",
                         exploration=gw.Exploration(policy=gw.EXPLORATION_POLICY_SOFTMAX, temperature=1.0))
               for n in range(3)]
    assert all(a.policy == "softmax" and all(0 < i.propensity <= 1 for i in a.items) for a in answers)
    assert len({tuple(i.item_id for i in a.items) for a in answers}) > 1


@pytest.mark.parametrize("fields, named", [
    ({"diversity": 1.5}, "diversity"),
    ({"exploration": gw.Exploration(policy=gw.EXPLORATION_POLICY_EPSILON, epsilon=2.0)}, "exploration.epsilon"),
    ({"exploration": gw.Exploration(policy=gw.EXPLORATION_POLICY_SOFTMAX)}, "exploration.temperature"),
    ({"exploration": gw.Exploration(policy=9)}, "exploration.policy"),
    ({"request_id": "x" * 300}, "request_id"),
])
def test_bad_policy_input_is_invalid_argument_naming_the_field(lmrec_system, fields, named):
    with pytest.raises(grpc.RpcError) as info:
        recommend(lmrec_system, user_id="1", k=10, **fields)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and named in info.value.details()


def test_scenario_policies_from_the_file_and_metrics_by_scenario(small_system_factory, tmp_path, metrics_scraper):
    free_port, scrape = metrics_scraper
    scenarios = tmp_path / "scenarios.toml"
    scenarios.write_text('[default]\ndiversity = 0.0\n\n[kids]\nfilters = { genre = ["Children\'s"] }\n'
                         'exploration = "epsilon"\nepsilon = 0.3\n')
    port = free_port()
    system = small_system_factory(extra_args={"gateway": ["--scenarios-file", str(scenarios),
                                                          "--metrics-port", str(port)]})
    user = fresh_user()
    feed(system, user, ["1", "50"], gw.EVENT_TYPE_CLICK)
    kids = recommend(system, user_id=user, k=5, scenario="kids")
    assert kids.scenario == "kids" and kids.policy == "epsilon" and len(kids.items) == 5
    attributes = {i.item_id: i.attributes for i in system.stub.GetItems(
        gw.GetItemsRequest(item_ids=[i.item_id for i in kids.items]), timeout=30).items}
    assert all("Children's" in attributes[i]["genre"].values for i in attributes)
    unknown = recommend(system, user_id=user, k=5, scenario="nowhere")
    assert unknown.scenario == "default" and unknown.policy == "greedy"
    samples = scrape(port)
    assert samples[("lmrec_gateway_recommend_requests_total",
                    frozenset({("scenario", "kids"), ("policy", "epsilon")}))] == 1
    assert samples[("lmrec_gateway_recommend_requests_total",
                    frozenset({("scenario", "other"), ("policy", "greedy")}))] == 1


def test_the_impression_log_exports_with_its_clicks_and_feeds_off_policy_evaluation(lmrec_system, tmp_path):
    import json
    import time

    from lmrec_tools.cli import main as cli
    from training.ope import read_log, run_ope

    users = [fresh_user() for _ in range(6)]
    exploration = gw.Exploration(policy=gw.EXPLORATION_POLICY_EPSILON, epsilon=0.2)
    clicks = set()
    for n, user in enumerate(users):
        feed(lmrec_system, user, ["1", "50", "100"], gw.EVENT_TYPE_CLICK)
        answer = recommend(lmrec_system, user_id=user, k=10, exploration=exploration, request_id=f"ope-{user}")
        item = answer.items[n % 10].item_id
        lmrec_system.stub.RecordFeedback(gw.RecordFeedbackRequest(events=[gw.FeedbackEvent(
            user_id=user, item_id=item, event_type=gw.EVENT_TYPE_CLICK, request_id=answer.request_id)]), timeout=30)
        clicks.add((answer.request_id, item))
    time.sleep(0.3)  # the impression writer's flush interval is 0.05 s
    out = tmp_path / "log.jsonl"
    with pytest.raises(SystemExit) as done:
        cli(["impressions", "export", "--state-dir", str(lmrec_system.layout.state_dir / "gateway"),
             "--out", str(out)])
    assert done.value.code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    mine = [r for r in rows if r["request_id"].startswith("ope-policy-")]
    assert len(mine) == 60 and {(r["request_id"], r["item_id"]) for r in mine if r["clicked"]} == clicks
    assert all(r["policy"] == "epsilon" and r["propensity_kind"] == "marginal" for r in mine)
    assert read_log(out)  # the exported log is what --ope reads
    epsilon_only = tmp_path / "epsilon.jsonl"
    epsilon_only.write_text("".join(json.dumps(r) + "\n" for r in mine))
    result = run_ope(epsilon_only, "greedy", resamples=200)
    assert result["n_impressions"] == 60 and result["n_requests"] == 6
    assert set(result["estimators"]) == {"ips", "snips", "dr"}


@pytest.mark.parametrize("context, named", [
    (common_pb2.UserContext(user_id="u", history_item_ids=["1", "2"], history_weights=[1.0]),
     "context.history_weights"),
    (common_pb2.UserContext(user_id="u", history_item_ids=["1"], history_weights=[float("nan")]),
     "context.history_weights"),
    (common_pb2.UserContext(user_id="u", negative_item_ids=["1"], negative_weights=[-1.0]),
     "context.negative_weights"),
])
def test_the_ranking_tier_refuses_bad_weights_naming_the_field(lmrec_system, context, named):
    from lmrec.v1 import ranking_service_pb2 as rk, ranking_service_pb2_grpc as rk_grpc

    with grpc.insecure_channel(lmrec_system.group.services["ranking"].address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            rk_grpc.RankingServiceStub(channel).Rank(
                rk.RankRequest(context=context, candidate_item_ids=["3", "4"]), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and named in info.value.details()
