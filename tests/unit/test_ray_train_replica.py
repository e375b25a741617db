"""The data-parallel pieces of `lmrec train --ray` that need no Ray: how rows are sharded, how the global
batch is split, the single-process replica, the flags, and the checkpoint's content round trip.
(tests/integration/test_ray_train.py runs them on Ray Train workers.)"""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from training.replica import LOCAL, current, local_batch, running_as, shard_rows

torch = pytest.importorskip("torch", reason="the training code needs the training extra")


@pytest.mark.parametrize("n, world", [(10, 2), (11, 2), (7, 3), (2, 4), (1, 1), (0, 2)])
def test_shards_are_equal_sized_and_cover_every_row(n, world):
    shards = [shard_rows(n, rank, world) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1, "every replica must take the same number of steps"
    assert len(shards[0]) == -(-n // world)
    assert set(np.concatenate(shards).tolist()) == set(range(n))
    # Only the padding (wrapping around to the start) repeats rows.
    assert len(np.concatenate(shards)) - n == (-(-n // world) * world - n if n else 0)


def test_shard_rows_rejects_a_rank_outside_the_world():
    with pytest.raises(ValueError):
        shard_rows(10, 2, 2)


def test_the_global_batch_is_split_over_the_replicas():
    assert local_batch(128, 1) == 128 and local_batch(128, 2) == 64 and local_batch(128, 3) == 42
    assert local_batch(2, 4) == 1


def test_the_single_process_replica_changes_nothing():
    assert current() is LOCAL
    rows = [np.arange(3), np.arange(2)]
    assert LOCAL.shard(rows) is rows and LOCAL.local_batch(32) == 32 and LOCAL.seed(7) == 7
    step = lambda x: x * 2  # noqa: E731
    assert LOCAL.wrap(step, torch.nn.Linear(1, 1)) is step
    t = torch.ones(2)
    assert LOCAL.gather(t) is t
    assert LOCAL.agreed(lambda: 0.25)() == 0.25


def test_running_as_installs_a_replica_for_the_duration():
    class Other(type(LOCAL)):
        rank = 3

    with running_as(Other()) as other:
        assert current() is other
    assert current() is LOCAL


def _train_args(*argv: str) -> argparse.Namespace:
    from training.train import add_train_arguments

    return add_train_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_ray_flags_need_ray_and_are_checked_at_start():
    from training.distributed import RayTrainOptions

    assert RayTrainOptions.from_args(_train_args()) is None
    options = RayTrainOptions.from_args(_train_args("--ray", "--workers", "4", "--gpus-per-worker", "1"))
    assert (options.workers, options.gpus_per_worker, options.backend) == (4, 1.0, "nccl")
    assert RayTrainOptions.from_args(_train_args("--ray")).backend == "gloo"
    with pytest.raises(SystemExit, match="--workers only apply with --ray"):
        RayTrainOptions.from_args(_train_args("--workers", "2"))
    with pytest.raises(SystemExit, match="--workers must be at least 1"):
        RayTrainOptions.from_args(_train_args("--ray", "--workers", "0"))


def test_a_fitted_model_survives_the_checkpoint_round_trip():
    """What a Ray Train worker checkpoints (plain tensors and values) rebuilds the model the driver exports."""
    from lmrec_data.datasets import CatalogItem, Dataset, Interaction
    from training.lm_config import LMRecConfig
    from training.lm_recommender import train, trained_from_state, trained_state
    from training.lm_scores import torch_scores
    from training.split import SplitConfig, build_split

    items = [CatalogItem(str(i), f"film {i}", f"a film about topic {i % 3}, number {i}", {}) for i in range(12)]
    events = [Interaction(str(u), str((u + t) % 12), t) for u in range(20) for t in range(5)]
    data = build_split(Dataset("tiny", items, events), SplitConfig(cold_fraction=0.0))
    trained = train(data, "test", LMRecConfig.tiny(), fixed_epochs=1)
    state = trained_state(trained)
    assert not any(isinstance(v, torch.nn.Module) for v in state.values())
    restored = trained_from_state(state, data, trained.config)
    history = data.history_sequences("test")
    np.testing.assert_array_equal(torch_scores(restored, history[:5]), torch_scores(trained, history[:5]))
    assert restored.epochs == trained.epochs and (restored.known == trained.known).all()
    np.testing.assert_array_equal(restored.lm.text, trained.lm.text)
