"""A small synthetic two-domain dataset in the generic layout, `scenario` on every interaction."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

DOMAINS = {"books": ["novel", "poetry", "history", "essay", "atlas"], "tools": ["hammer", "saw", "drill", "wrench", "pliers"]}


def write_two_domain_data(root: Path, users: int = 40, seed: int = 0) -> Path:
    """Each user alternates between the two domains; within a domain, items follow a per-user cycle,
    so a model that knows which domain is asked for can predict the next item there."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for domain, words in DOMAINS.items():
        for n, word in enumerate(words * 4):
            items.append({"item_id": f"{domain}-{n}", "title": f"{word} {n}",
                          "text": f"{word} number {n}, a {domain[:-1]}", "attributes": json.dumps({"domain": [domain]})})
    with open(root / "items.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["item_id", "title", "text", "attributes"])
        w.writeheader()
        w.writerows(items)
    with open(root / "interactions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "timestamp", "scenario"])
        for u in range(users):
            starts = {d: int(rng.integers(0, 20)) for d in DOMAINS}
            t = 0
            for step in range(6):
                for domain in DOMAINS:
                    w.writerow([u, f"{domain}-{(starts[domain] + step) % 20}", t, domain])
                    t += 1
    return root
