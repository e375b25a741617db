"""Scenario-aware training and per-scenario evaluation on a small synthetic two-domain dataset."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lmrec_data.datasets import load_dataset
from tests.scenario_data import write_two_domain_data
from training.split import NO_ITEM, SplitConfig, build_split


@pytest.fixture(scope="module")
def two_domains(tmp_path_factory) -> Path:
    return write_two_domain_data(tmp_path_factory.mktemp("scenario-data"))


def test_items_carry_the_scenario_of_their_interactions(two_domains):
    data = build_split(load_dataset(two_domains), SplitConfig(cold_fraction=0.0))
    assert data.scenario_names == ["books", "tools"]
    ids = data.item_scenario_ids()
    assert {data.item_ids[i].split("-")[0] for i in np.flatnonzero(ids == 1)} == {"books"}
    assert {data.item_ids[i].split("-")[0] for i in np.flatnonzero(ids == 2)} == {"tools"}


def test_views_hold_out_each_scenarios_last_and_previous_interaction(two_domains):
    from training.scenario_eval import scenario_views

    views = scenario_views(load_dataset(two_domains))
    data = views.test
    for u in range(data.n_users):
        test_hist, val_hist = data.history_sequences("test")[u], views.validation.history_sequences("validation")[u]
        for s in ("books", "tools"):
            target = views.targets[s][u]
            assert target != NO_ITEM and data.item_scenarios[target] == s
            assert target not in test_hist and target not in val_hist
        # the test history is everything but the two targets; validation also lacks one item per scenario
        assert len(test_hist) == 12 - 2 and len(val_hist) == 12 - 4
        assert views.validation.val_items[u] not in val_hist and views.validation.val_items[u] in test_hist
    assert np.array_equal(views.users["books"], np.arange(data.n_users))


def test_scenario_net_ranks_inside_the_asked_scenario_and_exports_its_gate(two_domains, tmp_path):
    """A scenario-aware fit validates per scenario, and the exported context graph takes the scenario:
    the ONNX graph run as the ranking worker runs it equals the PyTorch net for every scenario."""
    from training.lm_bundle import export_bundle
    from training.lm_config import LMRecConfig
    from training.lm_recommender import train
    from training.lm_scores import BundleScorer, torch_scores
    from training.scenario_eval import scenario_views

    views = scenario_views(load_dataset(two_domains))
    config = LMRecConfig.tiny()
    trained = train(views.test, "test", config, fixed_epochs=2)
    assert trained.net.gate is not None and trained.net.gate.gain.num_embeddings == 3
    blind = train(views.test, "test", replace(config, scenarios=False), fixed_epochs=2)
    assert blind.net.gate is None
    bundle = export_bundle(trained, views.test, tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["hyperparameters"]["scenarios"] == ["books", "tools"]
    assert manifest["parity"]["context_fp32_vs_torch_max_abs"] < 1e-4
    users = np.arange(10)
    history = views.test.history_sequences("test")
    for scenario in (0, 1, 2):
        ids = np.full(len(users), scenario)
        reference = torch_scores(trained, [history[u] for u in users], ids)
        served = BundleScorer(bundle, "fp32", views.test, "test", graphs_only=True).score(users, ids)
        np.testing.assert_allclose(served, reference, atol=1e-4)
    # The gate is not the identity for named scenarios after training: they read the interest differently.
    books = torch_scores(trained, [history[u] for u in users], np.full(len(users), 1))
    tools = torch_scores(trained, [history[u] for u in users], np.full(len(users), 2))
    assert not np.allclose(books, tools)


def test_quick_scenario_evaluation_writes_every_row(two_domains, tmp_path):
    from training.scenario_eval import main

    assert main(["--data", str(two_domains), "--out", str(tmp_path), "--quick", "--max-epochs", "2"]) == 0
    result = json.loads((tmp_path / f"{two_domains.name}_scenarios.json").read_text())
    for s in ("books", "tools"):
        entry = result["scenarios"][s]
        assert set(entry["models"]) == {"lmrec-scenario", "lmrec-blind", "sasrec-merged", "lmrec-single", "sasrec-single"}
        assert entry["users"] == 40
        assert all(0.0 <= row["ndcg@10"] <= 1.0 for row in entry["models"].values())
        assert set(entry["lmrec-scenario_vs"]) == {"lmrec-blind", "sasrec-merged", "lmrec-single", "sasrec-single"}
        parity = result["served_vs_torch"][s]
        assert parity["max_abs_score_diff"] < 1e-3

    from training.scenario_report import scenario_sections

    text = "\n".join(scenario_sections(tmp_path))
    assert "### Scenario `books` (40 users)" in text and "### Scenario `tools` (40 users)" in text
    assert text.count("| lmrec trained on this scenario only |") == 2 and "Target (scenario-aware lmrec" in text
