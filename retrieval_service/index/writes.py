"""Writes onto one graph: checking an upsert batch, placing items in slots, deleting, keeping filter graphs current."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retrieval_service.index.graph import Attributes, Graph, clean_attributes, normalize

# What a write needs to be applied again (to a rebuilt graph): ("upsert", (ids, vectors, attrs)) or ("delete", (ids,)).
Write = tuple[str, tuple]


def prepare_upsert(
    dimension: int, ids: Sequence[str], vectors: np.ndarray, attributes: Sequence[Attributes | None] | None
) -> tuple[list[str], np.ndarray, list[dict[str, list[str]] | None]]:
    """A checked batch: normalised vectors, cleaned attributes, and a repeated id's last occurrence only.

    Raises:
        ValueError: lengths disagree, wrong dimension, a zero/non-finite vector, or an id ending in NUL.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape != (len(ids), dimension):
        raise ValueError(f"expected vectors of shape ({len(ids)}, {dimension}), got {vectors.shape}")
    if attributes is not None and len(attributes) != len(ids):
        raise ValueError("attributes must have one entry per id")
    if any(not item_id or item_id.endswith("\0") for item_id in ids):
        raise ValueError("item ids must be non-empty and must not end in a NUL character")
    vectors = normalize(vectors)
    attrs = [clean_attributes(a) for a in (attributes or [None] * len(ids))]
    last = {item_id: i for i, item_id in enumerate(ids)}
    if len(last) != len(ids):
        keep = sorted(last.values())
        ids = [ids[i] for i in keep]
        vectors = vectors[keep]
        attrs = [attrs[i] for i in keep]
    return list(ids), vectors, attrs


def upsert_into(g: Graph, ids: list[str], vectors: np.ndarray, attrs: list, threads: int) -> None:
    """Adds or replaces items of a prepared batch; new ones revive freed slots before taking fresh ones."""
    labels = g.ids.get_many(ids)
    new = np.flatnonzero(labels < 0)
    fresh_needed = max(0, len(new) - len(g.free))
    if g.next_label + fresh_needed > g.capacity:
        g.grow(max(2 * g.capacity, g.next_label + fresh_needed))
    free = list(g.free)
    next_label = g.next_label
    for i in new.tolist():
        if free:
            labels[i] = free.pop()
        else:
            labels[i] = next_label
            next_label += 1
    # hnswlib first: if it fails, the bookkeeping still describes the graph.
    g.hnsw.add_items(vectors, labels, num_threads=threads)
    g.free = free
    g.next_label = next_label
    for i in new.tolist():
        g.ids.add(ids[i], int(labels[i]))
    g.live[labels] = True
    if g.shadow is not None:
        g.shadow[labels] = vectors
    numbers = np.fromiter((g.attributes.number(a) for a in attrs), dtype=np.int32, count=len(attrs))
    set_attributes(g, labels, numbers, vectors)


def delete_from(g: Graph, ids: list[str]) -> int:
    """Removes the known `ids`, freeing their slots; returns how many there were."""
    labels = g.ids.get_many(ids)
    known = np.flatnonzero(labels >= 0)
    labels = labels[known]
    for i, label in zip(known.tolist(), labels.tolist()):
        g.hnsw.mark_deleted(label)
        g.ids.remove(ids[i], label)
        g.free.append(label)
    g.live[labels] = False
    set_attributes(g, labels, np.zeros(len(labels), dtype=np.int32), None)
    return len(labels)


def apply(g: Graph, write: Write, threads: int) -> None:
    """Applies a logged write again."""
    op, args = write
    if op == "upsert":
        upsert_into(g, *args, threads=threads)
    else:
        delete_from(g, *args)


def set_attributes(g: Graph, labels: np.ndarray, numbers: np.ndarray, vectors: np.ndarray | None) -> None:
    """Gives `labels` new attribute combinations (0 and no vectors for deleted slots), keeping the
    filter graphs equal to their values' items."""
    for (key, value), fg in g.filter_graphs.items():
        was = g.attributes.bitmap(key, value, g.next_label)[labels]
        now = g.attributes.member(key, value)[numbers]
        for label in labels[was & ~now].tolist():
            fg.hnsw.mark_deleted(label)
        if now.any():
            needed = fg.hnsw.get_current_count() + int(np.count_nonzero(now & ~was))
            if needed > fg.hnsw.get_max_elements():
                fg.hnsw.resize_index(max(needed, 2 * fg.hnsw.get_max_elements()))
            fg.hnsw.add_items(vectors[now], labels[now], num_threads=1)
        fg.size += int(np.count_nonzero(now & ~was)) - int(np.count_nonzero(was & ~now))
    g.attributes.set(labels, numbers)
    if g.touched is not None:
        g.touched.append(labels.copy())
