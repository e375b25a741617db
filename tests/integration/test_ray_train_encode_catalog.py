"""`lmrec encode-catalog --ray` on a local Ray cluster of 2 CPUs: the Ray Data actor pool's vectors equal
the in-process encoder's, for a trained bundle's catalogue items (served from its training-time text
vectors) and for items it never saw (through the ONNX item encoder), then the item tower."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="needs lmrec[ray] (ray[data])")
pytest.importorskip("ray.data", reason="needs lmrec[ray] (ray[data])")
pytest.importorskip("torch", reason="training the bundle needs the training extra")

from ranking_service.batch_encode import ITEM_STORE_FILE, VectorsWriter, read_vectors  # noqa: E402
from ranking_service.item_store import ItemStore  # noqa: E402
from tests.integration.test_ray_train import ray_cluster, write_series_data  # noqa: E402,F401 (a fixture)
from training.encode_catalog import (add_encode_arguments, catalogue, encode_in_process,  # noqa: E402
                                     encoder_settings, run_encode)

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.timeout(600)]
NEW_ITEMS = 400
# Both paths run the same ONNX graphs on the same batches; only thread counts differ (ONNX Runtime's
# reductions may round differently). Observed max difference: 0 (2026-12-03).
ATOL = 1e-5


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory):
    from training.train import main as train_main

    root = tmp_path_factory.mktemp("encode")
    out = root / "bundle"
    assert train_main(["--data", str(write_series_data(root / "series")), "--config", "tiny", "--out", str(out),
                       "--epochs", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def catalogue_dir(trained_bundle, tmp_path_factory):
    """The bundle's own catalogue plus items it never saw."""
    root = tmp_path_factory.mktemp("catalogue")
    write_series_data(root)
    rng = np.random.default_rng(1)
    words = ["quiet", "loud", "space", "river", "family", "war", "robot", "garden", "night", "summer"]
    with open(root / "items.csv", "a", newline="") as f:
        csv.writer(f).writerows([f"new-{n}", f"new {n}", " ".join(rng.choice(words, size=int(rng.integers(3, 30))))]
                                for n in range(NEW_ITEMS))
    return root


def test_ray_data_actor_pool_encodes_as_the_in_process_encoder(ray_cluster, trained_bundle, catalogue_dir,
                                                               tmp_path, capsys):
    out, store = tmp_path / "ray.npy", tmp_path / "state" / ITEM_STORE_FILE
    args = add_encode_arguments(argparse.ArgumentParser()).parse_args(
        ["--ray", "--actors", "2", "--batch-size", "32", "--data", str(catalogue_dir), "--bundle", str(trained_bundle),
         "--out", str(out), "--item-store", str(store), "--device", "cpu"])
    assert run_encode(args) == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "ray data, 2 actor(s)"
    ids, on_ray, version = read_vectors(out)
    item_ids, texts = catalogue(str(catalogue_dir))
    assert ids == item_ids and len(ids) == 48 + NEW_ITEMS
    writer = encode_in_process(encoder_settings(args), item_ids, texts, 32,
                               lambda n, d, v: VectorsWriter(tmp_path / "local.npy", n, d, v))
    writer.close(item_ids)
    _, in_process, local_version = read_vectors(tmp_path / "local.npy")
    assert version == local_version
    np.testing.assert_allclose(on_ray, in_process, atol=ATOL, rtol=0)
    # The store a ranking worker on this bundle loads holds every item, so it encodes none.
    loaded = ItemStore(store, on_ray.shape[1], version)
    assert loaded.load(lambda i, t: pytest.fail(f"re-encoded {len(i)} items")) == 0 and len(loaded) == len(ids)
    got, _ = loaded.gather(ids)
    np.testing.assert_array_equal(got, on_ray)
    loaded.close()
