import numpy as np
import pytest

from lmrec_data.datasets import CatalogItem, Dataset, Interaction
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


@pytest.fixture(scope="module")
def two_pairs():
    """Items 1~2 and 3~4 co-occur symmetrically; probe user u0 had 1 first and 3 last in train."""
    items = [CatalogItem(str(i), f"Item {i}", f"Item {i}") for i in range(10)]
    interactions = []
    for u in range(1, 21):
        pair = (1, 2) if u % 2 else (3, 4)
        for t, i in enumerate((*pair, 7, 8)):  # 7 and 8 become the validation and test items
            interactions.append(Interaction(f"u{u}", str(i), t))
    for t, i in enumerate((1, 5, 6, 3, 7, 8)):
        interactions.append(Interaction("u0", str(i), t))
    data = build_split(Dataset("pairs", items, interactions), SplitConfig(cold_fraction=0.0, seed=0))
    assert list(data.history_sequences("validation")[data.user_index["u0"]]) == [
        data.item_index[i] for i in ("1", "5", "6", "3")]
    return data


def _probe_scores(model, data):
    model.fit(data, "validation")
    scores = model.score(np.array([data.user_index["u0"]]))[0]
    return scores[data.item_index["2"]], scores[data.item_index["4"]]


def test_itemknn_recency_prefers_neighbours_of_the_latest_item(two_pairs):
    near_first, near_last = _probe_scores(ItemKNN(neighbours=5, shrink=0.0), two_pairs)
    assert near_first == pytest.approx(near_last)  # no decay: both pairs weigh the same
    near_first, near_last = _probe_scores(ItemKNN(neighbours=5, shrink=0.0, recency_half_life=1.0), two_pairs)
    assert near_last > near_first > 0


def test_recency_weights_halve_per_half_life_and_stay_positive(two_pairs):
    from training.baselines.itemknn import MIN_POSITIVE_WEIGHT, recency_weighted_history

    u = two_pairs.user_index["u0"]
    seq = two_pairs.history_sequences("test")[u]
    row = recency_weighted_history(two_pairs, "test", half_life=2.0)[u].toarray()[0]
    assert np.allclose(row[seq], 2.0 ** (-np.arange(len(seq) - 1, -1, -1) / 2.0))
    assert np.count_nonzero(row) == len(seq)
    tiny = recency_weighted_history(two_pairs, "test", half_life=0.01)[u].toarray()[0]
    assert tiny[seq[-1]] == 1.0 and tiny[seq[0]] == pytest.approx(MIN_POSITIVE_WEIGHT)
    with pytest.raises(ValueError):
        recency_weighted_history(two_pairs, "test", half_life=0.0)


def test_itemknn_asymmetric_cosine_matches_its_formula(data):
    x = data.history_matrix("validation").toarray().astype(np.float64)
    co, n = x.T @ x, x.sum(axis=0)
    for alpha in (0.5, 0.8):
        model = ItemKNN(neighbours=data.n_items, shrink=5.0, asymmetric_alpha=alpha)
        model.fit(data, "validation")
        expected = co / (np.outer(n ** alpha, n ** (1 - alpha)) + 5.0 + 1e-9)
        np.fill_diagonal(expected, 0.0)
        assert np.allclose(model._sim, expected, atol=1e-6)


@pytest.mark.parametrize("weighting", ["bm25", "tfidf"])
def test_itemknn_weightings_give_finite_scores_and_still_learn(weighting, data):
    model = ItemKNN(neighbours=10, shrink=0.0, weighting=weighting, recency_half_life=3.0)
    model.fit(data, "test")
    assert np.isfinite(model.score(np.arange(data.n_users))).all()
    assert _test_ndcg(model, data) > _test_ndcg(MostPop(), data)


def test_unknown_weighting_is_rejected():
    with pytest.raises(ValueError):
        ItemKNN(weighting="bm-25")
    with pytest.raises(ValueError):
        BASELINES["als"](weighting="idf")


@pytest.mark.parametrize("weighting", ["none", "bm25", "tfidf"])
def test_als_confidence_reshapings_keep_every_history_item_positive(weighting, data):
    als = BASELINES["als"](factors=4, iterations=2, weighting=weighting, recency_half_life=2.0)
    r = als._interactions(data, "test")
    history = data.history_matrix("test")
    assert r.shape == history.shape and r.nnz == history.nnz and (r.data > 0).all()
    assert np.array_equal(np.sort(r.indices[r.indptr[0]:r.indptr[1]]), np.sort(history[0].indices))
    als.fit(data, "test")
    assert np.isfinite(als.score(np.arange(data.n_users))).all()


def test_als_default_confidence_is_the_binary_history(data):
    r = BASELINES["als"]()._interactions(data, "validation")
    assert (r != data.history_matrix("validation")).nnz == 0


@pytest.mark.parametrize("name", ["itemknn", "als"])
def test_every_grid_candidate_builds(name):
    cls = BASELINES[name]
    grid = cls.param_grid(quick=False)
    assert len(cls.param_grid(quick=True)) == 1 and len(grid) <= 300
    for params in grid:
        cls(seed=0, **params)
