"""The load generator's request mix, drawn from a dataset: known users weighted by activity, cold users,
free-text queries (movie-flavoured, as the default dataset is MovieLens) and genre filters."""

from __future__ import annotations

import bisect
import random
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lmrec.v1 import common_pb2
from lmrec.v1 import gateway_service_pb2 as pb
from lmrec_data.datasets import ML100K_GENRES, DatasetError, load_dataset, resolve_data_path


QUERIES = (
    "a funny animated movie for kids",
    "dark sci-fi thriller",
    "a feel-good romantic comedy",
    "classic film noir detective story",
    "something scary for halloween night",
    "an epic war movie",
    "a musical with great songs",
    "a smart courtroom drama",
    "space adventure with aliens",
    "a western with gunfights",
    "a heartwarming family film",
    "mind-bending psychological thriller",
    "a documentary about real events",
    "a tearjerker drama",
    "a heist movie with a clever plan",
    "action movie with car chases",
    "a fantasy adventure with magic",
    "a quirky independent comedy",
    "a crime movie about the mafia",
    "a mystery where you guess the killer",
    "a slow burn horror film",
    "a coming of age story",
    "an inspiring sports movie",
    "a period drama with great costumes",
    "a satire about politics",
    "a movie like star wars",
    "a light comedy for date night",
    "an animated disney classic",
    "a gritty cop thriller from the nineties",
    "a classic hitchcock style suspense film",
)


@dataclass(frozen=True)
class MixShares:
    """Fractions of requests with each property; the properties are drawn independently."""

    cold_user: float = 0.2
    query: float = 0.3
    genre_filter: float = 0.2

    def __post_init__(self) -> None:
        for name in ("cold_user", "query", "genre_filter"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} share must be in [0, 1], got {value}")


class RequestMix:
    """Deterministic stream of RecommendRequests drawn from known users, cold users, queries and genres."""

    def __init__(
        self,
        known_users: Sequence[str],
        user_weights: Sequence[float] | None,
        genres: Sequence[str],
        genre_weights: Sequence[float] | None,
        *,
        shares: MixShares = MixShares(),
        k: int = 10,
        seed: int = 0,
        queries: Sequence[str] = QUERIES,
        source: str = "synthetic",
    ) -> None:
        if not known_users and shares.cold_user < 1.0:
            raise ValueError("a mix with known users needs at least one known user id")
        if not genres and shares.genre_filter > 0.0:
            raise ValueError("a mix with genre filters needs at least one genre")
        if not 1 <= k <= 1000:
            raise ValueError(f"k must be in 1..1000, got {k}")
        self.known_users = list(known_users)
        self._user_cum = _cumulative(user_weights, len(self.known_users))
        self.genres = list(genres)
        self._genre_cum = _cumulative(genre_weights, len(self.genres))
        self.shares = shares
        self.k = k
        self.seed = seed
        self.queries = list(queries)
        self.source = source
        self._rng = random.Random(seed)
        self._known = set(self.known_users)
        self._cold_counter = 0

    @classmethod
    def synthetic(cls, *, shares: MixShares = MixShares(), k: int = 10, seed: int = 0) -> RequestMix:
        """A mix that needs no data: ML-100K-like numeric user ids and the ML-100K genre names."""
        return cls([str(u) for u in range(1, 101)], None, ML100K_GENRES[1:], None,
                   shares=shares, k=k, seed=seed, source="synthetic")

    @classmethod
    def from_dataset(cls, path: str | Path | None = None, *, shares: MixShares = MixShares(), k: int = 10,
                     seed: int = 0) -> RequestMix:
        """Users weighted by their number of interactions, genres by their number of items.

        Raises:
            DatasetError: the dataset cannot be read.
        """
        dataset = load_dataset(path)
        activity = Counter(x.user_id for x in dataset.interactions)
        genre_sizes = Counter(g for item in dataset.items for g in item.attributes.get("genre", []))
        users = sorted(activity)
        genres = sorted(genre_sizes)
        return cls(users, [activity[u] for u in users], genres, [genre_sizes[g] for g in genres],
                   shares=shares, k=k, seed=seed, source=f"{dataset.name} ({resolve_data_path(path)})")

    def next_request(self) -> pb.RecommendRequest:
        rng = self._rng
        request = pb.RecommendRequest(k=self.k)
        if not self.known_users or rng.random() < self.shares.cold_user:
            request.user_id = self._new_cold_user()
        else:
            request.user_id = self.known_users[_pick(rng, self._user_cum)]
        if rng.random() < self.shares.query:
            request.query = rng.choice(self.queries)
        if self.genres and rng.random() < self.shares.genre_filter:
            genre = self.genres[_pick(rng, self._genre_cum)]
            request.filters.append(common_pb2.AttributeFilter(key="genre", values=[genre]))
        return request

    def _new_cold_user(self) -> str:
        while True:
            self._cold_counter += 1
            user = f"loadtest-cold-{self.seed}-{self._cold_counter}"
            if user not in self._known:
                return user


def _cumulative(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        weights = [1.0] * n
    if len(weights) != n:
        raise ValueError(f"{len(weights)} weights for {n} values")
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    return out


def _pick(rng: random.Random, cumulative: list[float]) -> int:
    # bisect on the running sum; random.choices would do it too but re-sums the weights on every call.
    return min(bisect.bisect_right(cumulative, rng.random() * cumulative[-1]), len(cumulative) - 1)



def default_mix(data: str | None = None, *, shares: MixShares = MixShares(), k: int = 10,
                seed: int = 0) -> RequestMix:
    """The dataset mix; when no `data` was named and the default dataset is missing, a synthetic one.

    Raises:
        DatasetError: `data` was named explicitly and cannot be read.
    """
    try:
        return RequestMix.from_dataset(data, shares=shares, k=k, seed=seed)
    except DatasetError as exc:
        if data:
            raise
        print(f"lmrec loadtest: {exc}; using a synthetic request mix", file=sys.stderr)
        return RequestMix.synthetic(shares=shares, k=k, seed=seed)
