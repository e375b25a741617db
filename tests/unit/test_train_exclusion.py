"""`lmrec train --exclude-users` on a tiny dataset: the listed users' interactions never reach the model
(the manifest's data fingerprint is the data without them, and an item only they had gets no id
embedding), and the manifest says how many users and interactions the list dropped."""

from __future__ import annotations

import json

import pytest

from lmrec_data.datasets import load_dataset
from lmrec.erasure import append_erased, user_hash
from lmrec_data.exclusion import exclude_users


def test_train_drops_the_interactions_of_erased_users_and_reports_it(tmp_path):
    pytest.importorskip("torch", reason="needs the training extra")
    from lmrec.bundle import load_manifest
    from training.train import main as train_main

    root = tmp_path / "data"
    root.mkdir()
    genres = ["Comedy", "Drama", "Horror", "Animation"]
    movies = ["movieId,title,genres"] + [f"{i},Film {i} ({1990 + i % 10}),{genres[i % 4]}" for i in range(1, 42)]
    (root / "movies.csv").write_text("\n".join(movies) + "\n")
    rows = ["userId,movieId,rating,timestamp"]
    for u in range(1, 31):
        liked = [i for i in range(1, 41) if i % 4 == u % 4]
        rows += [f"{u},{m},4.0,{1000 + t}" for t, m in enumerate(liked[: 4 + u % 5])]
    rows += ["7,41,5.0,2000", "7,1,3.0,2001"]  # film 41: only user 7, who is erased, ever had it
    (root / "ratings.csv").write_text("\n".join(rows) + "\n")
    erased = tmp_path / "erased-users.txt"
    append_erased(erased, [user_hash("7"), user_hash("12"), user_hash("never seen")])

    out = tmp_path / "bundle"
    assert train_main(["--data", str(root), "--config", "tiny", "--out", str(out), "--exclude-users", str(erased)]) == 0
    manifest = load_manifest(out)
    dataset = load_dataset(root)
    kept, _ = exclude_users(dataset, {user_hash("7"), user_hash("12")})
    dropped = sum(x.user_id in ("7", "12") for x in dataset.interactions)
    assert manifest.hyperparameters["exclusion"] == {"listed_users": 3, "excluded_users": 2,
                                                     "excluded_interactions": dropped}
    assert manifest.data_fingerprint == kept.fingerprint() != dataset.fingerprint()
    with_ids = set(json.loads((out / manifest.extra_files["item_ids"]).read_text()))
    assert "41" not in with_ids and with_ids == {x.item_id for x in kept.interactions}
