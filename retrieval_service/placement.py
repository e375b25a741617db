"""Which items a retrieval shard owns, recorded in its data directory so a restart cannot change it silently.

`placement.json` beside the snapshots holds the shard's index, its placement (scheme and shard count) and,
while `lmrec reshard` moves items, the placement it is moving from. During a move the shard already owns
by the new placement: it refuses writes to items that are leaving (they are being copied; a write would
be lost), accepts the items that arrive, and still serves the leaving items to searches until the move
drops them. The decisions are pure functions of plain data; `IndexStore` holds the state.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lmrec.errors import FailedPrecondition
from lmrec.sharding import JUMP, MODULO, Placement

PLACEMENT_FILE = "placement.json"


class PlacementMismatch(Exception):
    """The shard's recorded placement and the one it was started with disagree (stops the process at start)."""


class NotOwned(FailedPrecondition):
    """A write for items this shard does not own (or that are leaving it mid-move)."""


@dataclass(frozen=True)
class ShardPlacement:
    shard_index: int
    placement: Placement
    # Set between `lmrec reshard`'s fence and its drop: the placement the shard's leaving items came by.
    moving_from: Placement | None = None

    def owns(self, item_id: str) -> bool:
        return self.placement.owner(item_id) == self.shard_index

    @property
    def retiring(self) -> bool:
        """A shard a shrink removes: it owns nothing under its placement."""
        return self.shard_index >= self.placement.shard_count

    def describe(self) -> str:
        text = f"shard {self.shard_index} of {self.placement.shard_count} ({self.placement.scheme} placement)"
        if self.moving_from is not None:
            text += f", moving from {self.moving_from}"
        return text

    def to_json(self) -> dict:
        return {
            "shard_index": self.shard_index,
            "shard_count": self.placement.shard_count,
            "scheme": self.placement.scheme,
            "moving_from": None if self.moving_from is None else {
                "shard_count": self.moving_from.shard_count, "scheme": self.moving_from.scheme},
        }

    @classmethod
    def from_json(cls, data: dict) -> ShardPlacement:
        moving = data.get("moving_from")
        return cls(int(data["shard_index"]), Placement(int(data["shard_count"]), data["scheme"]),
                   None if moving is None else Placement(int(moving["shard_count"]), moving["scheme"]))


def check_owned(placement: ShardPlacement | None, item_ids: list[str]) -> None:
    """Raises NotOwned naming the items `placement` gives to other shards (None: a lone shard owns all)."""
    if placement is None or (placement.placement.shard_count == 1 and placement.shard_index == 0):
        return
    foreign = [i for i in item_ids if not placement.owns(i)]
    if not foreign:
        return
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    if placement.moving_from is not None:
        raise NotOwned(
            f"items: {shown} not owned by {placement.describe()}: resharding is in progress and these items "
            f"belong to other shards of {placement.placement.shard_count}; retry against the new shard map")
    if placement.placement.scheme == MODULO:
        raise NotOwned(
            f"items: {shown} not owned by {placement.describe()}: this shard holds an index placed by modulo "
            f"hashing (written before lmrec recorded placement) while writers place by jump hashing; run "
            f"`lmrec reshard --from {placement.placement.shard_count} --to {placement.placement.shard_count}` "
            "to move the shards to jump placement")
    raise NotOwned(
        f"items: {shown} not owned by {placement.describe()}; route each item to "
        "lmrec.sharding.shard_for(item_id, shard_count)")


def check_deletable(placement: ShardPlacement | None, held_ids: list[str]) -> None:
    """Mid-move, a delete of a leaving item would be undone by its copy on the new shard: refused."""
    if placement is None or placement.moving_from is None:
        return
    leaving = [i for i in held_ids if not placement.owns(i)]
    if leaving:
        shown = ", ".join(leaving[:5]) + (f" and {len(leaving) - 5} more" if len(leaving) > 5 else "")
        raise NotOwned(f"items: {shown} are being moved off {placement.describe()}; delete them through the "
                       "new shard map once resharding has switched it")


def resolve_at_start(recorded: ShardPlacement | None, shard_index: int, shard_count: int,
                     holds_items: bool) -> ShardPlacement:
    """The placement a shard serves with, from its recorded state and the flags it was started with.

    Raises:
        PlacementMismatch: the flags contradict the recorded placement (e.g. a shard count changed by a
            reshard but not in the start command).
    """
    if recorded is None or (not holds_items and recorded.moving_from is None):
        if recorded is None and holds_items and shard_count > 1:
            # Written before placement was recorded, when every lmrec placed by modulo.
            return ShardPlacement(shard_index, Placement(shard_count, MODULO))
        # An empty shard can take any identity.
        return ShardPlacement(shard_index, Placement(shard_count, JUMP))
    if recorded.shard_index != shard_index:
        raise PlacementMismatch(
            f"this data directory belongs to {recorded.describe()}, not shard {shard_index}; "
            "give each shard its own data directory")
    counts = {recorded.placement.shard_count}
    if recorded.moving_from is not None:
        counts.add(recorded.moving_from.shard_count)
    if shard_count not in counts:
        raise PlacementMismatch(
            f"this data directory records {recorded.describe()} but the shard was started with "
            f"shard_count={shard_count}; start it with --shard-count {recorded.placement.shard_count} "
            "(a count changes only through `lmrec reshard`)")
    return recorded


def load(data_dir: Path) -> ShardPlacement | None:
    path = Path(data_dir) / PLACEMENT_FILE
    if not path.is_file():
        return None
    try:
        return ShardPlacement.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (KeyError, TypeError, ValueError) as exc:
        raise PlacementMismatch(f"{path} is unreadable ({exc}); it records which items this shard owns") from None


def save(data_dir: Path, placement: ShardPlacement) -> None:
    """Atomically and durably: a fence acknowledged to `lmrec reshard` must survive a crash."""
    path = Path(data_dir) / PLACEMENT_FILE
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(placement.to_json(), f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
