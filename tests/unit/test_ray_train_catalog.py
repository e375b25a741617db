"""`lmrec encode-catalog` without Ray: the bulk encoder is the ranking worker's own item encoding, its
vectors file reads back, and a worker started on its item store encodes nothing.
(tests/integration/test_ray_train_encode_catalog.py checks the Ray Data pipeline against this.)"""

from __future__ import annotations

import argparse
import csv

import numpy as np
import pytest

from ranking_service.batch_encode import (ITEM_STORE_FILE, CatalogEncoder, VectorsWriter, put_in_item_store,
                                          read_vectors)
from ranking_service.item_store import ItemStore
from ranking_service.model import load_model
from ranking_service.settings import RankingSettings
from training.encode_catalog import add_encode_arguments, encode_in_process, encoder_settings

TEXTS = [f"a {kind} film about {topic}" for kind in ("quiet", "loud", "funny") for topic in ("dogs", "space", "war")]
IDS = [f"item-{n}" for n in range(len(TEXTS))]


def settings_for(bundle_dir, tmp_path) -> RankingSettings:
    return RankingSettings(bundle_dir=bundle_dir, state_dir=tmp_path / "worker", device="cpu", warmup=False)


def test_the_bulk_encoder_is_the_workers_item_encoding(bundle_dir, tmp_path):
    encoder = CatalogEncoder(settings_for(bundle_dir, tmp_path))
    worker = load_model(settings_for(bundle_dir, tmp_path))
    try:
        np.testing.assert_array_equal(encoder.encode(IDS, TEXTS), worker.encode_items(IDS, TEXTS))
        assert encoder.model_version == worker.manifest.model_version
        assert encoder.dimension == worker.manifest.served_dimension
    finally:
        encoder.close()
        worker.store.close()


def test_batching_does_not_change_the_vectors(bundle_dir, tmp_path):
    settings = settings_for(bundle_dir, tmp_path)

    def writer_for(count, dimension, version):
        return VectorsWriter(tmp_path / f"out-{count}-{len(written)}.npy", count, dimension, version)

    written = []
    for batch in (2, 64):
        writer = encode_in_process(settings, IDS, TEXTS, batch, writer_for)
        writer.close(IDS)
        written.append(read_vectors(writer.path)[1])
    # Batches pad to their own longest text: float rounding, not a different vector.
    np.testing.assert_allclose(written[0], written[1], atol=1e-5)


def test_vectors_file_reads_back_and_is_published_only_complete(tmp_path):
    writer = VectorsWriter(tmp_path / "v.npy", 3, 2, "v1")
    writer.write(np.array([2, 0]), np.array([[5, 6], [1, 2]], dtype=np.float32))
    with pytest.raises(ValueError, match="1 of 3"):
        writer.close(["a", "b", "c"])
    assert not (tmp_path / "v.npy").exists()
    writer.write(np.array([1]), np.array([[3, 4]], dtype=np.float32))
    writer.close(["a", "b", "c"])
    ids, vectors, version = read_vectors(tmp_path / "v.npy")
    assert ids == ["a", "b", "c"] and version == "v1"
    np.testing.assert_array_equal(vectors, [[1, 2], [3, 4], [5, 6]])


def test_a_worker_started_on_the_item_store_encodes_none_of_its_items(bundle_dir, tmp_path):
    settings = settings_for(bundle_dir, tmp_path)
    encoder = CatalogEncoder(settings)
    vectors = encoder.encode(IDS, TEXTS)
    encoder.close()
    store_path = settings.state_dir / ITEM_STORE_FILE
    assert put_in_item_store(store_path, encoder.model_version, IDS, TEXTS, vectors, chunk=4) == len(IDS)

    def must_not_encode(ids, texts):
        raise AssertionError(f"re-encoded {len(ids)} items")

    store = ItemStore(store_path, encoder.dimension, encoder.model_version)
    assert store.load(must_not_encode) == 0
    store.close()
    worker = load_model(settings)  # what `lmrec serve` does at start and at a hot swap
    try:
        got, known = worker.store.gather(IDS)
        assert known.all()
        np.testing.assert_array_equal(got, vectors)
    finally:
        worker.store.close()


def test_encode_catalog_command_writes_vectors_and_item_store(bundle_dir, tmp_path, capsys):
    from training.encode_catalog import run_encode

    data = tmp_path / "data"
    data.mkdir()
    with open(data / "items.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title", "text"])
        w.writerows([i, t, t] for i, t in zip(IDS, TEXTS))
    with open(data / "interactions.csv", "w", newline="") as f:
        csv.writer(f).writerows([["user_id", "item_id", "timestamp"], ["u", IDS[0], 1], ["u", IDS[1], 2]])
    out, store = tmp_path / "vectors.npy", tmp_path / "state" / ITEM_STORE_FILE
    args = add_encode_arguments(argparse.ArgumentParser()).parse_args(
        ["--data", str(data), "--bundle", str(bundle_dir), "--out", str(out), "--item-store", str(store),
         "--device", "cpu", "--batch-size", "4"])
    assert run_encode(args) == 0
    assert '"stored": 9' in capsys.readouterr().out
    ids, vectors, version = read_vectors(out)
    assert ids == IDS
    reference = CatalogEncoder(encoder_settings(args))
    np.testing.assert_allclose(vectors, reference.encode(IDS, TEXTS), atol=1e-5)
    reference.close()
    loaded = ItemStore(store, vectors.shape[1], version)
    assert loaded.load(lambda ids, texts: pytest.fail("re-encoded")) == 0 and len(loaded) == len(IDS)
    loaded.close()
