"""Dataset loading into one shape: catalogue items plus interactions.

Readers for MovieLens-100K (`u.data`, `u.item`), MovieLens latest-small (`ratings.csv`, `movies.csv`,
`tags.csv`) and the generic lmrec format (`items.*` + `interactions.*` as CSV, JSONL or Parquet; see
docs/data.md). Pure Python, no torch, so the CLI can load a catalogue in a serving-only install.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import urllib.request
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ENV = "LMREC_DATA"
DEFAULT_ML100K = REPO_ROOT.parent / "shared" / "data" / "ml-100k"
ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_SHA256 = {
    "README": "4883b8cf340ed0059971b33f56ad3adc88a40792108ebca3d24aafc4c82e8b52",
    "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "u.genre": "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb",
    "u.info": "5b0a40b2e47a729ee6203063f6dcf8790c2e63f5a18663e6ee318a72c5f3c27b",
    "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
    "u.occupation": "cd5fbec9afe345d993a62fc7817df1a4a9079c4feb267b3118763b8fd942137d",
    "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
}
ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]


@dataclass(frozen=True)
class CatalogItem:
    item_id: str
    title: str
    text: str
    attributes: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Interaction:
    user_id: str
    item_id: str
    timestamp: int
    rating: float | None = None
    scenario: str | None = None


@dataclass
class Dataset:
    name: str
    items: list[CatalogItem]
    interactions: list[Interaction]

    def fingerprint(self) -> str:
        """sha256 over the canonical content, so a manifest can say exactly what a model saw."""
        digest = hashlib.sha256()
        for it in sorted(self.items, key=lambda i: i.item_id):
            digest.update(f"{it.item_id}\x1f{it.title}\x1f{it.text}\x1e".encode())
        for x in sorted(self.interactions, key=lambda i: (i.user_id, i.timestamp, i.item_id)):
            digest.update(f"{x.user_id}\x1f{x.item_id}\x1f{x.timestamp}\x1f{x.rating}\x1f{x.scenario}\x1e".encode())
        return digest.hexdigest()

    def histories(self) -> dict[str, list[Interaction]]:
        """Per user, interactions ordered by time with the item id as deterministic tie-break."""
        by_user: dict[str, list[Interaction]] = defaultdict(list)
        for x in self.interactions:
            by_user[x.user_id].append(x)
        for events in by_user.values():
            events.sort(key=lambda e: (e.timestamp, e.item_id))
        return dict(by_user)


class DatasetError(ValueError):
    pass


def resolve_data_path(path: str | os.PathLike | None = None) -> Path:
    """Flag beats environment (LMREC_DATA) beats the default ../shared/data/ml-100k."""
    if path:
        return Path(path)
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    return DEFAULT_ML100K


def item_text(title: str, genres: list[str], tags: list[str] | None = None) -> str:
    parts = [title.strip()]
    if genres:
        parts.append("Genres: " + ", ".join(genres) + ".")
    if tags:
        parts.append("Tags: " + ", ".join(tags[:20]) + ".")
    return " ".join(parts)


_YEAR = re.compile(r"\((\d{4})\)\s*$")


def _year_attr(title: str) -> dict[str, list[str]]:
    match = _YEAR.search(title)
    return {"year": [match.group(1)]} if match else {}


def load_movielens_100k(path: Path) -> Dataset:
    path = Path(path)
    items: list[CatalogItem] = []
    with (path / "u.item").open(encoding="latin-1") as f:
        for line in f:
            cols = line.rstrip("\n").split("|")
            if len(cols) < 24:
                continue
            genres = [g for g, flag in zip(ML100K_GENRES, cols[5:24]) if flag == "1" and g != "unknown"]
            title = cols[1]
            items.append(
                CatalogItem(cols[0], title, item_text(title, genres), {"genre": genres, **_year_attr(title)})
            )
    interactions = []
    with (path / "u.data").open() as f:
        for line in f:
            user, item, rating, ts = line.split("\t")
            interactions.append(Interaction(user, item, int(ts), float(rating)))
    return Dataset("ml-100k", items, interactions)


def load_movielens_latest(path: Path) -> Dataset:
    path = Path(path)
    tags: dict[str, list[str]] = defaultdict(list)
    if (path / "tags.csv").is_file():
        with (path / "tags.csv").open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                tag = row["tag"].strip()
                if tag and tag not in tags[row["movieId"]]:
                    tags[row["movieId"]].append(tag)
    items = []
    with (path / "movies.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            genres = [g for g in row["genres"].split("|") if g and g != "(no genres listed)"]
            title = row["title"]
            items.append(
                CatalogItem(row["movieId"], title, item_text(title, genres, tags.get(row["movieId"])),
                            {"genre": genres, **_year_attr(title)})
            )
    interactions = []
    with (path / "ratings.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            interactions.append(
                Interaction(row["userId"], row["movieId"], int(row["timestamp"]), float(row["rating"]))
            )
    return Dataset("ml-latest-small", items, interactions)


def _read_table(stem: Path) -> list[dict]:
    for suffix in (".csv", ".jsonl", ".parquet"):
        file = stem.with_suffix(suffix)
        if not file.is_file():
            continue
        if suffix == ".csv":
            with file.open(encoding="utf-8") as f:
                return list(csv.DictReader(f))
        if suffix == ".jsonl":
            with file.open(encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise DatasetError(f"{file}: reading Parquet needs pyarrow (pip install 'lmrec[training]')") from exc
        return pq.read_table(file).to_pylist()
    raise DatasetError(f"none of {stem.name}.csv, {stem.name}.jsonl, {stem.name}.parquet in {stem.parent}")


def _attributes(value) -> dict[str, list[str]]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise DatasetError(f"attributes must be a JSON object, got {value!r}")
    return {str(k): [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in value.items()}


def load_generic(path: Path) -> Dataset:
    path = Path(path)
    items = []
    for i, row in enumerate(_read_table(path / "items")):
        if not row.get("item_id"):
            raise DatasetError(f"items row {i}: item_id is required")
        title = str(row.get("title") or "")
        items.append(CatalogItem(str(row["item_id"]), title, str(row.get("text") or title),
                                 _attributes(row.get("attributes"))))
    interactions = []
    for i, row in enumerate(_read_table(path / "interactions")):
        try:
            rating = row.get("rating")
            interactions.append(Interaction(
                str(row["user_id"]), str(row["item_id"]), int(float(row["timestamp"])),
                None if rating in (None, "") else float(rating),
                str(row["scenario"]) if row.get("scenario") not in (None, "") else None,
            ))
        except (KeyError, ValueError) as exc:
            raise DatasetError(f"interactions row {i}: {exc!r}") from None
    return Dataset(path.name, items, interactions)


def load_dataset(path: str | os.PathLike | None = None) -> Dataset:
    """Loads whichever layout `path` holds (ML-100K, ML latest-small or generic)."""
    root = resolve_data_path(path)
    if not root.is_dir():
        raise DatasetError(
            f"dataset directory {root} does not exist; pass --data, set {DATA_ENV}, "
            "or run `lmrec data download` on a machine with internet"
        )
    if (root / "u.data").is_file():
        return load_movielens_100k(root)
    if (root / "ratings.csv").is_file() and (root / "movies.csv").is_file():
        return load_movielens_latest(root)
    return load_generic(root)


def download_movielens_100k(dest: Path) -> Path:
    """Downloads ML-100K from GroupLens and checks every file against its published sha256."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(ML100K_URL, timeout=120) as response:
        archive = zipfile.ZipFile(io.BytesIO(response.read()))
    for name, expected in ML100K_SHA256.items():
        data = archive.read(f"ml-100k/{name}")
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise DatasetError(f"ml-100k/{name}: sha256 {actual} differs from the published {expected}")
        (dest / name).write_bytes(data)
    return dest
