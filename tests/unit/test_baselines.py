import numpy as np
import pytest

from lmrec.datasets import CatalogItem, Dataset, Interaction
from training.baselines import BASELINES, EASE, ItemKNN, MostPop
from training.metrics import mask_history, per_user_metrics, target_ranks
from training.split import SplitConfig, build_split


@pytest.fixture(scope="module")
def data():
    """Two taste groups walking their half of a 30-item catalogue in order: learnable, tiny."""
    rng = np.random.default_rng(0)
    items = [CatalogItem(str(i), f"Item {i}", f"Item {i}") for i in range(30)]
    interactions = []
    for u in range(48):
        start = 0 if u % 2 == 0 else 15
        first = int(rng.integers(0, 5))
        for t, i in enumerate(range(start + first, start + first + int(rng.integers(6, 10)))):
            interactions.append(Interaction(f"u{u}", str(i), t))
    return build_split(Dataset("synthetic", items, interactions), SplitConfig(cold_fraction=0.1, seed=0))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_fits_and_scores_every_item(name, data):
    cls = BASELINES[name]
    for phase in ("validation", "test"):
        model = cls(seed=0, **cls.param_grid(quick=True)[0])
        model.fit(data, phase)
        users = np.array([0, 3, 5])
        scores = model.score(users)
        assert scores.shape == (3, data.n_items)
        assert np.isfinite(scores).all()
        assert model.name == name


def _test_ndcg(model, data):
    model.fit(data, "test")
    users = np.arange(data.n_users)
    scores = model.score(users)
    mask_history(scores, data.history_matrix("test"), users)
    return per_user_metrics(target_ranks(scores, data.test_items))["ndcg@10"].mean()


def test_item_models_learn_the_group_structure(data):
    popularity = _test_ndcg(MostPop(), data)
    assert _test_ndcg(ItemKNN(neighbours=10, shrink=0.0), data) > popularity
    assert _test_ndcg(EASE(l2=1.0), data) > popularity


def test_mostpop_follows_history_counts(data):
    model = MostPop()
    model.fit(data, "validation")
    scores = model.score(np.array([0]))[0]
    assert np.array_equal(scores, data.item_popularity("validation"))


def test_implicit_models_get_a_user_by_item_matrix(data):
    als = BASELINES["als"](factors=4, iterations=2)
    als.fit(data, "validation")
    assert als._user_factors.shape[0] == data.n_users
    assert als._item_factors.shape[0] == data.n_items


def test_sasrec_reports_its_best_epoch_and_is_seeded(data):
    params = {"hidden": 16, "layers": 1, "max_len": 8, "max_epochs": 3, "eval_every": 1, "patience": 5}
    first = BASELINES["sasrec"](seed=1, **params)
    first.fit(data, "validation")
    assert 1 <= first.fitted_params()["fixed_epochs"] <= 3
    assert [e for e, _ in first.curve] == [1, 2, 3]
    second = BASELINES["sasrec"](seed=1, **params)
    second.fit(data, "validation")
    assert np.allclose(first.score(np.arange(4)), second.score(np.arange(4)))
    refit = BASELINES["sasrec"](seed=1, **params, **first.fitted_params())
    refit.fit(data, "test")
    assert refit.curve == []  # no held-out signal is read in the test phase
