"""Reserved slots: a top-k list that holds at least a given number of items from one group.

New and cold items are ranked by their text alone and rarely outscore items the model has learnt from
interactions, so without help they are almost never shown and never collect the feedback that would
make them known. A quota of slots for them is how many production feeds buy that exposure. The gateway
serves it (`RecommendRequest.new_item_slots`); `bench/cold_slots.py` measures it offline with this same
function, so the offline figures describe exactly what is served.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def with_reserved_slots(ordered: Sequence, k: int, slots: int, reserved: Callable[[object], bool]) -> list[int]:
    """Positions in `ordered` (best first) of a top k that holds at least min(slots, available) reserved items.

    The plain top k when it already holds that many; otherwise its lowest-ranked unreserved items give
    way to the best reserved items below it, which go at the end in their own order. The rest keep
    their order.
    """
    top = list(range(min(k, len(ordered))))
    missing = min(slots, len(top)) - sum(1 for p in top if reserved(ordered[p]))
    if missing <= 0:
        return top
    extra = [p for p in range(len(top), len(ordered)) if reserved(ordered[p])][:missing]
    if not extra:
        return top
    drop = set([p for p in reversed(top) if not reserved(ordered[p])][: len(extra)])
    return [p for p in top if p not in drop] + extra
