"""Leave-one-out split with a cold-start item slice; the one data view every offline model sees.

Protocol (docs/evaluation.md repeats it for readers):
  * every rating is an implicit interaction; a repeated (user, item) pair keeps its first occurrence, so
    the task is always "recommend an item the user has not had yet" and history masking is well defined;
  * per user, interactions are ordered by timestamp, ties in the data file's order (a stable sort;
    `tie_break="item_id"` restores the old id order to measure what it changed); users with fewer than 3
    are dropped;
  * last interaction = test, the one before = validation, the rest = train;
  * a seeded `cold_fraction` of catalogue items is "cold": their interactions are removed from train and
    validation (a validation target that is cold leaves that user out of validation), but they stay
    candidates and may be test targets; the cold slice = users whose test item is cold;
  * every catalogue item is a candidate; interactions on items missing from the catalogue are dropped
    and counted in `SplitData.stats`.

Phases: "validation" scores the validation item with the train sequence as history; "test" scores the
test item with train + validation as history (standard practice; the validation item is then masked).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import scipy.sparse as sp

from lmrec_data.datasets import Dataset

Phase = Literal["validation", "test"]
PHASES: tuple[Phase, ...] = ("validation", "test")
MIN_INTERACTIONS = 3
NO_ITEM = -1


@dataclass(frozen=True)
class SplitConfig:
    cold_fraction: float = 0.1
    seed: int = 0
    tie_break: str = "file"

    def as_dict(self) -> dict:
        return {"cold_fraction": self.cold_fraction, "seed": self.seed, "min_interactions": MIN_INTERACTIONS,
                "tie_break": self.tie_break}

    @classmethod
    def from_dict(cls, recorded: dict) -> SplitConfig:
        """The config `as_dict` recorded (e.g. in a bundle manifest); splits before tie_break used item ids."""
        return cls(cold_fraction=recorded["cold_fraction"], seed=recorded["seed"],
                   tie_break=recorded.get("tie_break", "item_id"))


@dataclass
class SplitData:
    """Everything a model may learn from, in dense indices (users and items are 0..n-1).

    Models read history only through `history_sequences(phase)` / `history_matrix(phase)`. In the
    validation phase they may also read `val_items` (e.g. for early stopping); `test_items` is for the
    harness only.

    Attributes:
        dataset_name, fingerprint: which data this is (fingerprint = Dataset.fingerprint()).
        user_ids, item_ids: raw id of each dense index; `user_index` / `item_index` are the inverses.
        item_titles, item_texts: per dense item index, from the catalogue (the LM model's input).
        train_sequences: per user, train item indices in time order (cold items removed).
        train_timestamps: matching timestamps.
        val_items: per user, validation item index, or NO_ITEM (-1) when the user's validation
            interaction was on a cold item.
        test_items: per user, test item index (always present; may be cold); test_timestamps: its time.
        cold_items: bool mask over items.
        config, stats: how the split was made and what was dropped.
        user_attributes: per dense user, the dataset's attributes of that user ({} when it has none).
            For the evaluation's user slices; no model reads them.
        item_attributes: per dense item, the catalogue's attributes (genres...), for beyond-accuracy
            metrics; no model reads them.
        item_scenarios: per dense item, the scenario (surface, domain) most of its interactions came
            from ("" when the data has none): what scenario-aware models condition on.
    """

    dataset_name: str
    fingerprint: str
    user_ids: list[str]
    item_ids: list[str]
    item_titles: list[str]
    item_texts: list[str]
    train_sequences: list[np.ndarray]
    train_timestamps: list[np.ndarray]
    val_items: np.ndarray
    val_timestamps: np.ndarray
    test_items: np.ndarray
    cold_items: np.ndarray
    test_timestamps: np.ndarray
    config: SplitConfig
    stats: dict = field(default_factory=dict)
    user_attributes: list[dict[str, list[str]]] = field(default_factory=list)
    item_attributes: list[dict[str, list[str]]] = field(default_factory=list)
    item_scenarios: list[str] = field(default_factory=list)
    user_index: dict[str, int] = field(default_factory=dict)
    item_index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.user_index = {u: i for i, u in enumerate(self.user_ids)}
        self.item_index = {it: i for i, it in enumerate(self.item_ids)}
        self._cache: dict[tuple[str, Phase] | str, object] = {}

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def scenario_names(self) -> list[str]:
        """The data's scenarios, sorted; index + 1 is a scenario's id in scenario-aware models (0 = none)."""
        return sorted({s for s in self.item_scenarios if s})

    def item_scenario_ids(self) -> np.ndarray:
        """int64 [n_items]: each item's scenario id (0 = none), numbered as `scenario_names`."""
        if "scenario_ids" not in self._cache:  # read per validation check and per scored batch
            ids = {name: n + 1 for n, name in enumerate(self.scenario_names)}
            self._cache["scenario_ids"] = np.array([ids.get(s, 0) for s in self.item_scenarios]
                                                   or np.zeros(self.n_items), dtype=np.int64)
        return self._cache["scenario_ids"]

    @property
    def train(self) -> sp.csr_matrix:
        """Binary user x item matrix of train interactions (the validation-phase history)."""
        return self.history_matrix("validation")

    def history_sequences(self, phase: Phase) -> list[np.ndarray]:
        """Per user, the ordered item indices a model may use as history in `phase`."""
        _check_phase(phase)
        key = ("seq", phase)
        if key not in self._cache:
            if phase == "validation":
                self._cache[key] = self.train_sequences
            else:
                self._cache[key] = [
                    np.append(seq, v).astype(np.int64) if v != NO_ITEM else seq
                    for seq, v in zip(self.train_sequences, self.val_items)
                ]
        return self._cache[key]

    def without_items(self, removed: np.ndarray, tag: str) -> SplitData:
        """A copy whose train sequences lose every interaction on the `removed` items (bool mask over
        items), which thereby become as cold to a model fitted on it as the split's own cold items.
        Validation and test targets stay, so the users whose validation item was removed measure how
        a model ranks items it never saw. `tag` joins the fingerprint, keeping caches apart."""
        keep = [~removed[seq] for seq in self.train_sequences]
        copy = replace(self, fingerprint=f"{self.fingerprint}:{tag}",
                       train_sequences=[seq[k] for seq, k in zip(self.train_sequences, keep)],
                       train_timestamps=[ts[k] for ts, k in zip(self.train_timestamps, keep)],
                       stats={**self.stats, "removed_for": tag, "removed_items": int(removed.sum())})
        return copy

    def history_timestamps(self, phase: Phase) -> list[np.ndarray]:
        _check_phase(phase)
        if phase == "validation":
            return self.train_timestamps
        return [
            np.append(ts, t).astype(np.int64) if v != NO_ITEM else ts
            for ts, v, t in zip(self.train_timestamps, self.val_items, self.val_timestamps)
        ]

    def history_matrix(self, phase: Phase) -> sp.csr_matrix:
        """Binary float32 user x item CSR of the history in `phase` (what the harness masks)."""
        key = ("csr", phase)
        if key not in self._cache:
            seqs = self.history_sequences(phase)
            indptr = np.zeros(self.n_users + 1, dtype=np.int64)
            indptr[1:] = np.cumsum([len(s) for s in seqs])
            indices = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)
            matrix = sp.csr_matrix(
                (np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(self.n_users, self.n_items)
            )
            matrix.sum_duplicates()
            matrix.data[:] = 1.0
            self._cache[key] = matrix
        return self._cache[key]

    def targets(self, phase: Phase) -> np.ndarray:
        """Per user, the held-out item of `phase` (NO_ITEM where there is none)."""
        _check_phase(phase)
        return self.val_items if phase == "validation" else self.test_items

    def eval_users(self, phase: Phase) -> np.ndarray:
        """Dense indices of the users that have a target in `phase`."""
        return np.flatnonzero(self.targets(phase) != NO_ITEM)

    def item_popularity(self, phase: Phase) -> np.ndarray:
        """Interaction count per item in the `phase` history."""
        return np.asarray(self.history_matrix(phase).sum(axis=0)).ravel()

    def protocol(self) -> dict:
        return {
            "split": f"leave-one-out by time (tie-break: {self.config.tie_break} order); last = test, "
                     "previous = validation",
            "candidates": "all catalogue items; the user's own history items are masked",
            **self.config.as_dict(),
            **self.stats,
        }


def _check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")


def _natural_key(raw: str) -> tuple:
    """Numeric ids sort as numbers so dense indices follow the intuitive order (2 before 10)."""
    return (0, int(raw), "") if raw.isdigit() else (1, 0, raw)


def build_split(dataset: Dataset, config: SplitConfig | None = None) -> SplitData:
    """Applies the protocol above to `dataset`.

    Raises:
        ValueError: the catalogue is empty or no user has enough interactions.
    """
    config = config or SplitConfig()
    if not 0.0 <= config.cold_fraction < 1.0:
        raise ValueError(f"cold_fraction must be in [0, 1), got {config.cold_fraction}")
    catalogue = {}
    for item in dataset.items:
        catalogue.setdefault(item.item_id, item)
    if not catalogue:
        raise ValueError(f"dataset {dataset.name!r} has an empty catalogue")
    item_ids = sorted(catalogue, key=_natural_key)
    item_index = {it: i for i, it in enumerate(item_ids)}

    unknown_item_events = 0
    repeat_events = 0
    kept: dict[str, list[tuple[int, int]]] = {}
    histories = dataset.histories(config.tie_break)
    for user, events in histories.items():
        seen: set[int] = set()
        rows = []
        for e in events:
            idx = item_index.get(e.item_id)
            if idx is None:
                unknown_item_events += 1
                continue
            if idx in seen:
                repeat_events += 1
                continue
            seen.add(idx)
            rows.append((e.timestamp, idx))
        if len(rows) >= MIN_INTERACTIONS:
            kept[user] = rows
    if not kept:
        raise ValueError(f"dataset {dataset.name!r}: no user has {MIN_INTERACTIONS} or more interactions")
    dropped_users = len(histories) - len(kept)

    rng = np.random.default_rng(config.seed)
    n_cold = int(round(config.cold_fraction * len(item_ids)))
    cold = np.zeros(len(item_ids), dtype=bool)
    cold[rng.choice(len(item_ids), size=n_cold, replace=False)] = True

    user_ids = sorted(kept, key=_natural_key)
    train_seqs, train_ts, val_items, val_ts, test_items, test_ts = [], [], [], [], [], []
    cold_train_dropped = cold_val_dropped = 0
    for user in user_ids:
        # Keeping Dataset.histories()'s order means code walking it sees the same sequence as the split.
        rows = kept[user]
        ts = np.array([r[0] for r in rows], dtype=np.int64)
        items = np.array([r[1] for r in rows], dtype=np.int64)
        warm = ~cold[items[:-2]]
        cold_train_dropped += int((~warm).sum())
        train_seqs.append(items[:-2][warm])
        train_ts.append(ts[:-2][warm])
        if cold[items[-2]]:
            cold_val_dropped += 1
            val_items.append(NO_ITEM)
        else:
            val_items.append(items[-2])
        val_ts.append(ts[-2])
        test_items.append(items[-1])
        test_ts.append(ts[-1])

    test_arr = np.array(test_items, dtype=np.int64)
    stats = {
        "n_users": len(user_ids),
        "n_items": len(item_ids),
        "n_cold_items": int(cold.sum()),
        "n_train_interactions": int(sum(len(s) for s in train_seqs)),
        "n_validation_users": int(sum(v != NO_ITEM for v in val_items)),
        "n_test_users": len(user_ids),
        "n_cold_test_users": int(cold[test_arr].sum()),
        "dropped_users_lt_min": dropped_users,
        "dropped_unknown_item_interactions": unknown_item_events,
        "dropped_repeat_interactions": repeat_events,
        "dropped_cold_train_interactions": cold_train_dropped,
        "dropped_cold_validation_targets": cold_val_dropped,
    }
    return SplitData(
        dataset_name=dataset.name,
        fingerprint=dataset.fingerprint(),
        user_ids=user_ids,
        item_ids=item_ids,
        item_titles=[catalogue[i].title for i in item_ids],
        item_texts=[catalogue[i].text for i in item_ids],
        train_sequences=train_seqs,
        train_timestamps=train_ts,
        val_items=np.array(val_items, dtype=np.int64),
        val_timestamps=np.array(val_ts, dtype=np.int64),
        test_items=test_arr,
        cold_items=cold,
        test_timestamps=np.array(test_ts, dtype=np.int64),
        config=config,
        stats=stats,
        user_attributes=[dataset.users.get(u, {}) for u in user_ids],
        item_attributes=[catalogue[i].attributes for i in item_ids],
        item_scenarios=_item_scenarios(dataset, item_ids),
    )


def _item_scenarios(dataset: Dataset, item_ids: list[str]) -> list[str]:
    counts: dict[str, Counter] = defaultdict(Counter)
    for x in dataset.interactions:
        if x.scenario:
            counts[x.item_id][x.scenario] += 1
    return [counts[i].most_common(1)[0][0] if counts.get(i) else "" for i in item_ids]


def evaluation_split(bundle_dir, data_path=None) -> tuple[object, Dataset, SplitData]:
    """(manifest, dataset, split) of an evaluation bundle: the split it was trained on, rebuilt.

    Raises:
        ValueError: the bundle is a production bundle (trained on every interaction) or was trained on
            other data than `data_path`'s.
    """
    from lmrec_data.datasets import load_dataset, resolve_data_path
    from lmrec.bundle import load_manifest

    manifest = load_manifest(bundle_dir)
    hp = manifest.hyperparameters
    if hp.get("training_data") != "holdout":
        raise ValueError(f"{bundle_dir} is not an evaluation bundle (lmrec train --holdout)")
    dataset = load_dataset(resolve_data_path(data_path))
    data = build_split(dataset, SplitConfig.from_dict(hp["split"]))
    if manifest.data_fingerprint != data.fingerprint:
        raise ValueError(f"{bundle_dir} was trained on other data")
    return manifest, dataset, data


def all_interactions(dataset: Dataset, tie_break: str = "file") -> SplitData:
    """The production view: every interaction of every user is history in the "test" phase.

    What `lmrec train` (without --holdout) fits its served model on. No item is cold and nothing is held
    out: the "validation" item is each user's last interaction, so `history_sequences("test")` is the
    whole sequence, and `test_items` repeats that item only to keep the shape. Nothing may be scored on
    this view.
    """
    split = build_split(dataset, SplitConfig(cold_fraction=0.0, tie_break=tie_break))
    # With no cold items every user has a validation item: train + validation + test is the whole sequence.
    return replace(split,
                   train_sequences=[np.append(seq, v) for seq, v in zip(split.train_sequences, split.val_items)],
                   train_timestamps=[np.append(ts, t) for ts, t in zip(split.train_timestamps, split.val_timestamps)],
                   val_items=split.test_items.copy(), val_timestamps=split.test_timestamps.copy(),
                   stats={**split.stats, "view": "all interactions"})
