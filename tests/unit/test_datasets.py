"""Dataset loaders on small fixtures of each layout, and the same commands on the latest-small layout."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lmrec_data.datasets import DatasetError, age_group, load_dataset


def _write(path, text: str) -> None:
    path.write_text(text.lstrip("\n"), encoding="utf-8")


@pytest.fixture
def latest_small(tmp_path):
    """MovieLens latest-small layout: ratings.csv, movies.csv, tags.csv."""
    root = tmp_path / "ml-latest-small"
    root.mkdir()
    _write(root / "movies.csv", '''
movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
2,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",Adventure|Drama|Fantasy|Mystery|Sci-Fi
3,Unknown Film,(no genres listed)
''')
    _write(root / "ratings.csv", '''
userId,movieId,rating,timestamp
1,1,4.0,964982703
1,2,3.5,964981247
2,3,5.0,964982224
''')
    _write(root / "tags.csv", '''
userId,movieId,tag,timestamp
2,1,pixar,1445714994
3,1,pixar,1445714995
3,1,fun,1445714996
''')
    return root


def test_latest_small_layout(latest_small):
    ds = load_dataset(latest_small)
    assert ds.name == "ml-latest-small"
    items = {i.item_id: i for i in ds.items}
    assert items["1"].text == "Toy Story (1995) Genres: Adventure, Animation, Children, Comedy, Fantasy. Tags: pixar, fun."
    assert items["1"].attributes == {"genre": ["Adventure", "Animation", "Children", "Comedy", "Fantasy"], "year": ["1995"]}
    assert items["2"].title.startswith("City of Lost Children, The")  # quoted commas survive
    assert items["3"].attributes == {"genre": []} and items["3"].text == "Unknown Film"
    assert [(x.user_id, x.item_id, x.timestamp, x.rating) for x in ds.interactions][:2] == [
        ("1", "1", 964982703, 4.0), ("1", "2", 964981247, 3.5)]


def test_ml100k_layout(tmp_path):
    root = tmp_path / "ml-100k"
    root.mkdir()
    flags = ["0"] * 19
    flags[3] = flags[4] = "1"  # Animation, Children's
    (root / "u.item").write_text("1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(flags) + "\n",
                                 encoding="latin-1")
    (root / "u.data").write_text("196\t1\t3\t881250949\n")
    ds = load_dataset(root)
    assert ds.name == "ml-100k"
    assert ds.items[0].text == "Toy Story (1995) Genres: Animation, Children's."
    assert ds.interactions[0].user_id == "196" and ds.interactions[0].rating == 3.0
    assert ds.users == {}  # u.user is optional
    before = ds.fingerprint()

    (root / "u.user").write_text("196|49|M|writer|55105\n7|24|F|student|02139\n", encoding="latin-1")
    ds = load_dataset(root)
    # The zip code is not kept; the age band is derived for the evaluation's slices.
    assert ds.users == {"196": {"age": ["49"], "age_group": ["35-49"], "gender": ["M"], "occupation": ["writer"]},
                        "7": {"age": ["24"], "age_group": ["<25"], "gender": ["F"], "occupation": ["student"]}}
    assert ds.fingerprint() == before  # no model reads user attributes: bundles stay valid

    (root / "u.user").write_text("196|forty|M|writer|55105\n", encoding="latin-1")
    with pytest.raises(DatasetError, match="u.user line 1: age 'forty'"):
        load_dataset(root)


def test_age_bands():
    assert [age_group(a) for a in (7, 24, 25, 34, 35, 49, 50, 73)] == [
        "<25", "<25", "25-34", "25-34", "35-49", "35-49", "50+", "50+"]


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_generic_layout_with_optional_columns(tmp_path, suffix):
    root = tmp_path / "shop"
    root.mkdir()
    items = [{"item_id": "a", "title": "Red shoe", "text": "A red running shoe", "attributes": {"colour": "red"}},
             {"item_id": "b", "title": "Blue hat", "text": "", "attributes": {}}]
    events = [{"user_id": "u1", "item_id": "a", "timestamp": 10, "rating": "", "scenario": "search"},
              {"user_id": "u1", "item_id": "b", "timestamp": 11, "rating": 5, "scenario": ""}]
    if suffix == "jsonl":
        _write(root / "items.jsonl", "\n".join(json.dumps(i) for i in items))
        _write(root / "interactions.jsonl", "\n".join(json.dumps(e) for e in events))
    else:
        _write(root / "items.csv", "item_id,title,text,attributes\na,Red shoe,A red running shoe,\"{\"\"colour\"\": \"\"red\"\"}\"\nb,Blue hat,,\n")
        _write(root / "interactions.csv", "user_id,item_id,timestamp,rating,scenario\nu1,a,10,,search\nu1,b,11,5,\n")
    ds = load_dataset(root)
    assert ds.name == "shop"
    by_id = {i.item_id: i for i in ds.items}
    assert by_id["a"].attributes == {"colour": ["red"]}
    assert by_id["b"].text == "Blue hat"  # the title stands in for a missing text
    assert [(x.rating, x.scenario) for x in ds.interactions] == [(None, "search"), (5.0, None)]
    assert ds.users == {}


def test_generic_users_table_is_optional_and_checked(tmp_path):
    root = tmp_path / "shop"
    root.mkdir()
    _write(root / "items.csv", "item_id,title\na,A\n")
    _write(root / "interactions.csv", "user_id,item_id,timestamp\nu1,a,10\n")
    _write(root / "users.jsonl", json.dumps({"user_id": "u1", "attributes": {"gender": "F", "tier": ["gold"]}})
           + "\n" + json.dumps({"user_id": "u9"}) + "\n")
    assert load_dataset(root).users == {"u1": {"gender": ["F"], "tier": ["gold"]}, "u9": {}}
    (root / "users.jsonl").unlink()
    _write(root / "users.csv", "user_id,attributes\nu1,not-json\n")
    with pytest.raises(DatasetError, match="users row 0"):
        load_dataset(root)
    _write(root / "users.csv", "user_id,attributes\n,{}\n")
    with pytest.raises(DatasetError, match="users row 0: user_id is required"):
        load_dataset(root)


def test_generic_layout_errors_name_the_row(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    _write(root / "items.csv", "item_id,title\na,A\n")
    _write(root / "interactions.csv", "user_id,item_id,timestamp\nu1,a,not-a-time\n")
    with pytest.raises(DatasetError, match="interactions row 0"):
        load_dataset(root)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "missing")


def test_same_commands_run_on_the_latest_small_layout(tmp_path):
    """`lmrec evaluate` and `lmrec train` on a latest-small layout, no code or flag changes beyond --data."""
    pytest.importorskip("torch", reason="needs the training extra")
    from training import evaluate
    from training.train import main as train_main

    root = tmp_path / "ml-latest-small"
    root.mkdir()
    genres = ["Comedy", "Drama", "Horror", "Animation"]
    lines = ["movieId,title,genres"] + [f"{i},Film {i} ({1990 + i % 10}),{genres[i % 4]}" for i in range(1, 41)]
    _write(root / "movies.csv", "\n".join(lines) + "\n")
    rows = ["userId,movieId,rating,timestamp"]
    for u in range(1, 31):
        liked = [i for i in range(1, 41) if i % 4 == u % 4]
        rows += [f"{u},{m},4.0,{1000 + t}" for t, m in enumerate(liked[: 4 + u % 5])]
    _write(root / "ratings.csv", "\n".join(rows) + "\n")
    out = tmp_path / "evaluation"
    assert evaluate.main(["--data", str(root), "--out", str(out), "--quick", "--models", "mostpop,lmrec"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["ml-latest-small"]["models"]) == {"mostpop", "lmrec"}
    assert train_main(["--data", str(root), "--config", "tiny", "--out", str(tmp_path / "bundle")]) == 0
    assert (tmp_path / "bundle" / "manifest.json").is_file()
    check_production_bundle(tmp_path / "bundle", load_dataset(root))


def check_production_bundle(bundle, dataset):
    """`lmrec train` without --holdout learns every interaction: every item any user had has its id
    embedding (no cold hold-out), the manifest says so, and the evaluation harness refuses to score it."""
    from lmrec.bundle import load_manifest
    from training.lm_recommender import TrainedBundleRecommender
    from training.split import SplitConfig, build_split

    manifest = load_manifest(bundle)
    assert manifest.hyperparameters["training_data"] == "all"
    with_ids = set(json.loads((bundle / manifest.extra_files["item_ids"]).read_text()))
    assert with_ids == {x.item_id for x in dataset.interactions}
    split = build_split(dataset, SplitConfig.from_dict(manifest.hyperparameters["split"]))
    with pytest.raises(ValueError, match="production bundle"):
        TrainedBundleRecommender(bundle, "fp32").fit(split, "test")


def _archive(tmp_path, kind: str, files: dict[str, bytes]) -> Path:
    import io
    import tarfile
    import zipfile

    path = tmp_path / f"data.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in files.items():
                archive.writestr(f"pkg/data/{name}", data)
    else:
        with tarfile.open(path, "w:gz") as archive:
            for name, data in files.items():
                info = tarfile.TarInfo(f"pkg/data/{name}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_download_checks_the_archive_and_every_file(tmp_path, monkeypatch, kind):
    import hashlib

    from lmrec_data import datasets

    files = {"ratings.csv": b"userId,movieId,rating,timestamp\n1,1,4.0,1\n", "movies.csv": b"movieId,title,genres\n"}
    archive = _archive(tmp_path, kind, files)
    digest = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    spec = datasets.Download(archive.as_uri(), hashlib.sha256(archive.read_bytes()).hexdigest(), "pkg/data", digest,
                             "fixture terms")
    monkeypatch.setitem(datasets.DOWNLOADS, "fixture", spec)
    out = datasets.download_dataset("fixture", tmp_path / "out")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files

    tampered = dataclasses.replace(spec, files={**digest, "movies.csv": "0" * 64})
    monkeypatch.setitem(datasets.DOWNLOADS, "fixture", tampered)
    with pytest.raises(datasets.DatasetError, match="fixture/movies.csv: sha256"):
        datasets.download_dataset("fixture", tmp_path / "again")
    monkeypatch.setitem(datasets.DOWNLOADS, "fixture", dataclasses.replace(spec, archive_sha256="0" * 64))
    with pytest.raises(datasets.DatasetError, match="differs from 0000"):
        datasets.download_dataset("fixture", tmp_path / "again")
