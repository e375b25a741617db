"""Snapshots: the graph, its filter graphs and the slot tables written to a directory and read back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import hnswlib
import numpy as np

from retrieval_service.index.graph import COPY_CHUNK, METRIC, FilterGraph, Graph, clean_attributes, new_graph
from retrieval_service.index.shared import SharedIndex

SNAPSHOT_FORMAT = 2


class SnapshotMismatch(Exception):
    """A snapshot on disk does not fit the index configured to load it."""


def save(shared: SharedIndex, directory: Path) -> None:
    """Writes the graph and bookkeeping into `directory` (which must exist) and fsyncs them.

    The caller makes it atomic by writing into a temporary directory and renaming it; writes must
    be held off by the caller too if the snapshot has to match a log position. Filter graphs are
    saved beside the main graph (at 1M items a value's graph takes minutes to rebuild, and filtered
    queries walk the main graph slowly until it is back); the exact-scan copy is read back from it.
    """
    files = ["graph.hnsw", "slots.npz", "meta.json"]
    with shared.lock.read():
        g = shared.graph
        g.hnsw.save_index(str(directory / "graph.hnsw"))
        filter_graphs = []
        for n, ((key, value), fg) in enumerate(sorted(g.filter_graphs.items(), key=lambda kv: kv[0])):
            name = f"filter-{n}.hnsw"
            fg.hnsw.save_index(str(directory / name))
            filter_graphs.append({"key": key, "value": value, "file": name, "size": fg.size, "m": fg.hnsw.M})
            files.append(name)
        used = g.next_label
        np.savez(
            directory / "slots.npz",
            names=g.ids.names[:used],
            live=g.live[:used],
            combo=g.attributes.combo[:used],
            free=np.asarray(g.free, dtype=np.int64),
        )
        meta = {
            "format": SNAPSHOT_FORMAT,
            "metric": METRIC,
            "dimension": shared.dimension,
            "m": shared.config.m,
            "capacity": g.capacity,
            "next_label": used,
            "combos": g.attributes.combos,
            "filter_graphs": filter_graphs,
        }
    with open(directory / "meta.json", "w", encoding="utf-8") as f:
        json.dump(meta, f, separators=(",", ":"))
    for name in files:
        _fsync_file(directory / name)


def load(shared: SharedIndex, directory: Path) -> None:
    """Replaces the shared graph with a snapshot written by `save`.

    Reads format 1 (before the numpy tables) too; its float16 copy, if any, is not needed.

    Raises:
        SnapshotMismatch: the snapshot was written for another dimension, metric or format.
    """
    with open(directory / "meta.json", encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("format") not in (1, SNAPSHOT_FORMAT):
        raise SnapshotMismatch(
            f"snapshot {directory} has format={meta.get('format')!r}, this index reads 1 and {SNAPSHOT_FORMAT}")
    for key, expected in (("metric", METRIC), ("dimension", shared.dimension)):
        if meta.get(key) != expected:
            raise SnapshotMismatch(f"snapshot {directory} has {key}={meta.get(key)!r}, this index needs {expected!r}")
    capacity = max(meta["capacity"], shared.config.initial_capacity)
    hnsw = hnswlib.Index(space="ip", dim=shared.dimension)
    hnsw.load_index(str(directory / "graph.hnsw"), max_elements=capacity)
    g = new_graph(shared.dimension, shared.config, capacity, hnsw)
    g.next_label = meta["next_label"]
    if meta["format"] == 1:
        _read_format_1(g, meta)
    else:
        with np.load(directory / "slots.npz") as slots:
            names, live, combo, free = slots["names"], slots["live"], slots["combo"], slots["free"]
        g.free = free.tolist()
        for attributes in meta["combos"][1:]:
            g.attributes.number(attributes)
        g.attributes.combo[: g.next_label] = combo
        g.live[: g.next_label] = live
        for label in np.flatnonzero(live).tolist():
            g.ids.add(names[label].decode("utf-8"), label)
    if g.shadow is not None:
        labels = np.flatnonzero(g.live)
        for start in range(0, len(labels), COPY_CHUNK):
            chunk = labels[start : start + COPY_CHUNK]
            g.shadow[chunk] = hnsw.get_items(chunk, return_type="numpy")
    _load_filter_graphs(shared, directory, meta.get("filter_graphs", []), g)
    with shared.lock.write():
        shared.graph = g


def _read_format_1(g: Graph, meta: dict) -> None:
    # Written before the numpy tables: one [label, id, attributes] entry per live item.
    g.free = list(meta["free"])
    labels = np.array([label for label, _, _ in meta["items"]], dtype=np.int64)
    for label, item_id, _ in meta["items"]:
        g.ids.add(item_id, label)
    numbers = np.array([g.attributes.number(clean_attributes(a)) for _, _, a in meta["items"]], np.int32)
    g.live[labels] = True
    g.attributes.combo[labels] = numbers


def _load_filter_graphs(shared: SharedIndex, directory: Path, saved: list[dict], g: Graph) -> None:
    """Takes back the saved filter graphs this configuration would build the same way; the others
    are dropped and, if queries ask for them, rebuilt."""
    if shared.config.filter_graph_share <= 0:
        return
    for entry in saved:
        if entry["m"] != shared.config.value_graph_m or not (directory / entry["file"]).is_file():
            continue
        fg = hnswlib.Index(space="ip", dim=shared.dimension)
        fg.load_index(str(directory / entry["file"]))
        g.attributes.pinned.add((entry["key"], entry["value"]))
        g.filter_graphs[(entry["key"], entry["value"])] = FilterGraph(fg, entry["size"])


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
