"""A scenario-aware bundle served end to end: RecommendRequest.scenario reaches the context encoder, and
the served ranking in each scenario is the offline one for that scenario."""

from __future__ import annotations

import numpy as np
import pytest

from lmrec_data.datasets import load_dataset
from lmrec.bundle import load_manifest
from lmrec.v1 import gateway_service_pb2 as gw
from tests.integration.conftest import start
from tests.integration.test_trained_model import assert_same_ranking
from tests.scenario_data import write_two_domain_data

pytest.importorskip("torch", reason="training needs the training extra")
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def two_domain_bundle(tmp_path_factory):
    from training.train import main

    data_dir = write_two_domain_data(tmp_path_factory.mktemp("two-domains"))
    out = tmp_path_factory.mktemp("trained") / "lmrec-scenarios"
    assert main(["--config", "tiny", "--holdout", "--data", str(data_dir), "--out", str(out)]) == 0
    return data_dir, out


@pytest.fixture(scope="module")
def scenario_system(tmp_path_factory, two_domain_bundle):
    data_dir, bundle = two_domain_bundle
    system = start(tmp_path_factory.mktemp("system"), bundle, load_dataset(data_dir),
                   extra_args={"ranking": ["--precision", "fp32"]})
    yield system
    system.close()


def test_bundle_declares_its_scenarios(two_domain_bundle):
    _, bundle = two_domain_bundle
    manifest = load_manifest(bundle)
    assert manifest.hyperparameters["scenarios"] == ["books", "tools"]
    assert manifest.parity["context_fp32_vs_torch_max_abs"] < 1e-4


def test_served_ranking_in_each_scenario_equals_offline(scenario_system, two_domain_bundle):
    from training.lm_scores import BundleScorer
    from training.metrics import mask_history
    from training.split import SplitConfig, build_split

    data_dir, bundle = two_domain_bundle
    split = build_split(load_dataset(data_dir), SplitConfig.from_dict(load_manifest(bundle).hyperparameters["split"]))
    users = np.arange(4)
    history = split.history_sequences("test")
    index = {item_id: i for i, item_id in enumerate(split.item_ids)}
    served_tops: dict[str, list[list[int]]] = {}
    for scenario_id, scenario in ((0, ""), (1, "books"), (2, "tools")):
        offline = BundleScorer(bundle, "fp32", split, "test").score(users, np.full(len(users), scenario_id))
        mask_history(offline, split.history_matrix("test"), users)
        for row, u in enumerate(users):
            recent = [split.item_ids[i] for i in history[u]]
            reply = scenario_system.stub.Recommend(gw.RecommendRequest(
                user_id=f"check-{u}", k=10, recent_item_ids=recent, scenario=scenario), timeout=30)
            assert not reply.degraded and reply.source == "ranked"
            top = [index[i.item_id] for i in reply.items]
            assert_same_ranking(top, offline[row], 10)
            served_tops.setdefault(scenario, []).append([(item, round(i.score, 6)) for item, i in zip(top, reply.items)])
    # The scenario changed what was served (the tiny model's gate moves scores, if not yet the order):
    # the context encoder read it.
    assert served_tops["books"] != served_tops["tools"] != served_tops[""]


def test_a_scenario_the_bundle_never_saw_reads_as_none(scenario_system, two_domain_bundle):
    data_dir, _ = two_domain_bundle
    recent = ["books-1", "tools-2", "books-2"]
    tops = {}
    for scenario in ("", "checkout-page"):
        reply = scenario_system.stub.Recommend(gw.RecommendRequest(
            user_id="check-unknown", k=10, recent_item_ids=recent, scenario=scenario), timeout=30)
        assert not reply.degraded
        tops[scenario] = [(i.item_id, round(i.score, 5)) for i in reply.items]
    assert tops[""] == tops["checkout-page"]


def test_data_without_ratings_gets_no_rating_head_and_a_weight_changes_nothing(scenario_system, two_domain_bundle):
    """No rating in the data: the manifest says so, and a request weighing the rating objective is answered
    by the next-item score alone, saying so with rating_weight 0 and no predicted_rating."""
    _, bundle = two_domain_bundle
    manifest = load_manifest(bundle)
    assert manifest.hyperparameters["rating_head"] is None
    assert "no ratings" in manifest.hyperparameters["rating_head_absent"]
    assert "rating_head" not in manifest.extra_files and not (bundle / "rating_head.npz").exists()
    request = dict(user_id="check-no-ratings", k=10, recent_item_ids=["books-1", "tools-2", "books-2"])
    plain = scenario_system.stub.Recommend(gw.RecommendRequest(**request), timeout=30)
    weighted = scenario_system.stub.Recommend(gw.RecommendRequest(**request, rating_weight=2.0), timeout=30)
    for reply in (plain, weighted):
        assert not reply.degraded and reply.source == "ranked" and reply.rating_weight == 0.0
        assert not any(i.HasField("predicted_rating") for i in reply.items)
    assert [(i.item_id, i.score) for i in weighted.items] == [(i.item_id, i.score) for i in plain.items]
