import argparse
import csv
import json

import numpy as np
import pytest

from training import evaluate, registry
from training.report import main as render_report
from training.protocols import Recommender
from training.split import build_split
from lmrec_data.datasets import load_dataset


@pytest.fixture(scope="module")
def generic_dataset(tmp_path_factory):
    """A tiny dataset in the generic items.csv + interactions.csv layout of docs/data.md."""
    root = tmp_path_factory.mktemp("data") / "tiny"  # the generic loader names the dataset after the folder
    root.mkdir()
    rng = np.random.default_rng(0)
    with (root / "items.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["item_id", "title", "text", "attributes"])
        for i in range(40):
            writer.writerow([f"m{i}", f"Movie {i}", f"Movie {i}, genre {i % 4}", json.dumps({"genre": [str(i % 4)]})])
    with (root / "interactions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "timestamp", "rating"])
        for u in range(60):
            group = u % 4
            liked = [i for i in range(40) if i % 4 == group] + list(rng.choice(40, 3, replace=False))
            for t, i in enumerate(rng.permutation(liked)[: int(rng.integers(4, 12))]):
                writer.writerow([f"user{u}", f"m{i}", 1000 + t, 4])
    # Two thirds of the users are described; the rest have no row, as the generic layout allows.
    with (root / "users.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "attributes"])
        for u in range(40):
            writer.writerow([f"user{u}", json.dumps({"gender": "FM"[u % 2], "age_group": ["<25", "50+"][u % 3 == 0]})])
    return root


def test_quick_run_end_to_end(generic_dataset, tmp_path, capsys):
    out = tmp_path / "evaluation"
    rc = evaluate.main(["--data", str(generic_dataset), "--out", str(out), "--quick",
                        "--models", "mostpop,itemknn,ease,als,bpr,sasrec,lmrec"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())["tiny"]
    assert set(results["models"]) == {"mostpop", "itemknn", "ease", "als", "bpr", "sasrec", "lmrec"}
    row = results["models"]["ease"]
    for metric in ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr@10", "coverage@10"):
        assert 0.0 <= row[metric] <= 1.0
    assert row["ndcg@10_ci"][0] <= row["ndcg@10"] <= row["ndcg@10_ci"][1]
    for name, model_row in results["models"].items():
        assert 0.0 <= model_row["ild@10"] <= 2.0 and 0.0 <= model_row["ild_attr@10"] <= 1.0, name
        assert 0.0 <= model_row["gini@10"] <= 1.0 and model_row["novelty@10"] >= 0.0, name
        assert model_row["ild@10_ci"][0] <= model_row["ild@10"] <= model_row["ild@10_ci"][1], name
    assert {"popularity:head", "popularity:torso", "popularity:tail", "cold_start:cold", "cold_start:warm"} \
        <= set(results["slices"])
    sizes = [results["slices"][f"popularity:{b}"]["n_users"] for b in ("head", "torso", "tail")]
    assert sum(sizes) + results["slices"]["cold_start:cold"]["n_users"] == results["protocol"]["n_users"]
    activity = [g for g in results["slices"] if g.startswith("activity:")]
    assert activity == ["activity:<=50", "activity:51-150", "activity:>150"]
    assert sum(results["slices"][g]["n_users"] for g in activity) == results["protocol"]["n_users"]
    # Described users only; age bands youngest first.
    assert [g for g in results["slices"] if g.split(":")[0] in ("gender", "age_group")] == [
        "gender:F", "gender:M", "age_group:<25", "age_group:50+"]
    assert results["slices"]["gender:F"]["n_users"] + results["slices"]["gender:M"]["n_users"] == 40
    assert results["significance"]["best_baseline"] in results["models"]
    assert set(results["tuning"]) == set(results["models"])
    assert not results["skipped"]
    # The LM model is scored through its exported bundle; it ranks, and is compared with the best baseline.
    assert 0.0 <= results["models"]["lmrec"]["ndcg@10"] <= 1.0
    assert "lmrec" in results["significance"]["comparisons"]
    bundle = results["tuning"]["lmrec"]["bundle"]
    assert bundle["model_version"].startswith("lmrec-")
    assert "reencoded_int8_vs_fp32_ndcg_rel_diff" in bundle["ranking_parity"]
    for png in ("tiny_metrics.png", "tiny_popularity.png", "tiny_cold_warm.png", "tiny_activity.png"):
        assert (out / png).stat().st_size > 1000
    report = (tmp_path / "evaluation.md").read_text()
    assert "| ease |" in report and "evaluation/tiny_metrics.png" in report
    assert "re-encoded by the INT8 encoder" in report
    assert "### By user" in report and "| model | gender F NDCG@10 / HR@10 (n=20) |" in report
    assert "### Beyond accuracy" in report and "| model | ILD@10 (LM) [95% CI] |" in report
    (tmp_path / "evaluation.md").unlink()
    assert render_report(["--out", str(out)]) == 0  # re-render from results.json alone
    assert (tmp_path / "evaluation.md").read_text() == report


class _Oracle(Recommender):
    """Knows the test items: checks that the harness ranks what a model scores."""

    name = "oracle"

    def fit(self, data, phase):
        self._targets = data.targets(phase)
        self._n_items = data.n_items

    def score(self, user_idx):
        scores = np.zeros((len(user_idx), self._n_items), dtype=np.float32)
        scores[np.arange(len(user_idx)), self._targets[user_idx]] = 1.0
        return scores


def test_registered_model_is_evaluated_like_a_baseline(generic_dataset, monkeypatch):
    monkeypatch.setattr(registry, "MODEL_FACTORIES", dict(registry.MODEL_FACTORIES))
    registry.register_model("lmrec", lambda args, **params: _Oracle())
    entries, skipped = registry.resolve_models(["lmrec", "mostpop"])
    assert set(entries) == {"lmrec", "mostpop"} and not skipped
    data = build_split(load_dataset(generic_dataset))
    args = argparse.Namespace(seed=0, quick=True)
    models = {name: entry.factory(args) for name, entry in entries.items()}
    vectors = np.random.default_rng(0).normal(size=(data.n_items, 8))
    result = evaluate.evaluate_models(data, models, baselines={"mostpop"}, item_vectors=vectors)
    assert result["models"]["lmrec"]["hr@10"] == 1.0 and result["models"]["lmrec"]["ndcg@10"] == 1.0
    assert 0.0 <= result["models"]["lmrec"]["ild@10"] <= 2.0
    assert result["per_user"]["lmrec"]["novelty@10"].shape == (data.n_users,)
    comparison = result["significance"]["comparisons"]["lmrec"]["ndcg@10"]
    assert result["significance"]["best_baseline"] == "mostpop" and comparison["p_value"] < 0.01
    assert result["slices"]["cold_start:cold"]["models"]["lmrec"]["hr@10"] in (1.0, None)
    registry.register_model("lmrec", lambda args, **params: _Oracle(), grid=lambda quick: [])
    assert evaluate.tune("lmrec", registry.MODEL_FACTORIES["lmrec"], data, args) == ({}, [])


def test_item_vectors_are_encoded_once_per_data_and_lm_failure_is_loud(generic_dataset, monkeypatch):
    import training.export_encoder
    import training.lm_finetune

    data = build_split(load_dataset(generic_dataset))
    calls = []
    monkeypatch.setattr(evaluate, "_ITEM_VECTORS", {})
    monkeypatch.setattr(training.export_encoder, "load_pooled_encoder", lambda model: (None, None, "stub"))
    monkeypatch.setattr(training.lm_finetune, "embed_texts",
                        lambda pooled, tokenizer, texts, max_length: calls.append(texts) or np.eye(len(texts)))
    args = argparse.Namespace(seed=0, quick=True)
    for _ in range(2):
        models = {name: registry.MODEL_FACTORIES[name].factory(args) for name in ("mostpop", "itemknn")}
        result = evaluate.evaluate_models(data, models)
    assert calls == [data.item_texts]
    # One-hot vectors: every pair of distinct items is orthogonal.
    assert result["models"]["itemknn"]["ild@10"] == pytest.approx(1.0)

    def unavailable(model):
        raise OSError("no weights here")

    monkeypatch.setattr(evaluate, "_ITEM_VECTORS", {})
    monkeypatch.setattr(training.export_encoder, "load_pooled_encoder", unavailable)
    with pytest.raises(RuntimeError, match="item_vectors"):
        evaluate.evaluate_models(data, {"mostpop": registry.MODEL_FACTORIES["mostpop"].factory(args)})


def test_unknown_model_is_an_error():
    with pytest.raises(ValueError, match="unknown model"):
        registry.resolve_models(["nope"])


def test_model_options_reach_plugin_factories():
    assert evaluate.parse_model_options(["checkpoint=runs/lm", "k=a=b"]) == {"checkpoint": "runs/lm", "k": "a=b"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        evaluate.parse_model_options(["novalue"])


def test_merge_keeps_earlier_models_of_the_same_split(generic_dataset, tmp_path):
    out = tmp_path / "evaluation"
    common = ["--data", str(generic_dataset), "--out", str(out), "--quick"]
    assert evaluate.main([*common, "--models", "mostpop,ease"]) == 0
    assert evaluate.main([*common, "--models", "itemknn", "--merge"]) == 0
    assert evaluate.main([*common, "--models", "ease", "--merge"]) == 0  # re-evaluated: keeps its place
    results = json.loads((out / "results.json").read_text())["tiny"]
    assert list(results["models"]) == ["mostpop", "ease", "itemknn"]
    assert list(results["tuning"]) == ["mostpop", "ease", "itemknn"]
    assert "--merge" in results["run"]["command"]
    assert [r["command"].split("--models ")[1].split()[0] for r in results["run"]["merged_runs"]] == [
        "mostpop,ease", "itemknn"]
    for group in results["slices"].values():
        assert set(group["models"]) == {"mostpop", "ease", "itemknn"}
    assert results["significance"]["best_baseline"] in {"mostpop", "ease", "itemknn"}
    with pytest.raises(ValueError, match="other data or another split"):
        evaluate.main([*common, "--models", "mostpop", "--merge", "--seed", "1"])


def test_merge_renders_earlier_rows_without_beyond_accuracy_metrics(generic_dataset, tmp_path):
    out = tmp_path / "evaluation"
    common = ["--data", str(generic_dataset), "--out", str(out), "--quick"]
    assert evaluate.main([*common, "--models", "mostpop"]) == 0
    # A results.json written before these metrics existed.
    all_results = json.loads((out / "results.json").read_text())
    row = all_results["tiny"]["models"]["mostpop"]
    for key in [k for k in row if k.split("@")[0] in ("ild", "ild_attr", "novelty", "gini")]:
        del row[key]
    (out / "results.json").write_text(json.dumps(all_results))
    assert evaluate.main([*common, "--models", "itemknn", "--merge"]) == 0
    results = json.loads((out / "results.json").read_text())["tiny"]
    assert "ild@10" not in results["models"]["mostpop"] and "ild@10" in results["models"]["itemknn"]
    report = (tmp_path / "evaluation.md").read_text()
    assert "| mostpop | – | – | – | " in report
    assert "| itemknn | – |" not in report


def test_merge_provenance_drops_runs_the_same_command_superseded(generic_dataset, tmp_path):
    out = tmp_path / "evaluation"
    common = ["--data", str(generic_dataset), "--out", str(out), "--quick"]
    assert evaluate.main([*common, "--models", "mostpop,ease"]) == 0
    for _ in range(3):  # the same model re-scored again and again
        assert evaluate.main([*common, "--models", "itemknn", "--merge"]) == 0
    run = json.loads((out / "results.json").read_text())["tiny"]["run"]
    assert [r["command"].split("--models ")[1].split()[0] for r in run["merged_runs"]] == ["mostpop,ease"]
    assert "--models itemknn" in run["command"]


def test_report_knows_the_default_baselines():
    """The report flags a dataset evaluated against part of the field; its list must be the CLI default's."""
    from training.evaluate import DEFAULT_MODELS
    from training.report import STANDARD_BASELINES

    assert set(STANDARD_BASELINES) == set(DEFAULT_MODELS.split(",")) - {"lmrec", "lmrec-fp32"}
