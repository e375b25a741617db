"""Dropping erased users (lmrec/erasure.py's list) from a dataset before training."""

from __future__ import annotations

from dataclasses import dataclass

from lmrec.erasure import user_hash
from lmrec_data.datasets import Dataset


@dataclass(frozen=True)
class Exclusion:
    listed: int  # hashes in the list
    users: int  # users of the dataset it matched
    interactions: int  # their interactions, dropped

    def as_dict(self) -> dict[str, int]:
        return {"listed_users": self.listed, "excluded_users": self.users, "excluded_interactions": self.interactions}


def exclude_users(dataset: Dataset, erased: set[str]) -> tuple[Dataset, Exclusion]:
    """`dataset` without the interactions and attributes of users whose hash is in `erased`."""
    users = {x.user_id for x in dataset.interactions} | set(dataset.users)
    gone = {u for u in users if user_hash(u) in erased}
    kept = [x for x in dataset.interactions if x.user_id not in gone]
    out = Dataset(dataset.name, dataset.items, kept, {u: a for u, a in dataset.users.items() if u not in gone})
    return out, Exclusion(len(erased), len(gone), len(dataset.interactions) - len(kept))
