"""The served system as a harness model: `lmrec evaluate --models served --target host:port`.

Each test user is sent to the gateway's public Recommend API as a fresh user id whose history is the
split's test-phase history (`recent_item_ids`), so the served system sees exactly what the offline
models see and nothing stored under the real user id leaks in. The gateway returns its top `TOP_K`;
items outside it score -inf, which the harness counts as "not in the top 20" (every metric here is
@10 or @20, so those are exact). Requests go out a few at a time with a generous deadline: this
measures quality, not latency.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lmrec.client import gateway_channel
from training.protocols import ModelEntry, Recommender
from training.split import Phase, SplitData

TOP_K = 20
MAX_RECENT = 1000
PARALLEL = 4
USER_PREFIX = "eval-"


class ServedRecommender(Recommender):
    name = "served"

    def __init__(self, target: str, timeout_s: float = 30.0) -> None:
        self.target, self.timeout_s = target, timeout_s
        self.degraded = 0
        self.model_versions: set[str] = set()

    def fit(self, data: SplitData, phase: Phase) -> None:
        self._data, self._history = data, data.history_sequences(phase)

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        from lmrec.v1 import gateway_service_pb2 as gw, gateway_service_pb2_grpc as gw_grpc

        data = self._data
        out = np.full((len(user_idx), data.n_items), -np.inf, dtype=np.float32)
        with gateway_channel(self.target) as channel:
            stub = gw_grpc.GatewayServiceStub(channel)

            def ask(u: int) -> gw.RecommendResponse:
                recent = [data.item_ids[i] for i in self._history[u][-MAX_RECENT:]]
                request = gw.RecommendRequest(user_id=USER_PREFIX + data.user_ids[u], k=TOP_K, recent_item_ids=recent)
                return stub.Recommend(request, timeout=self.timeout_s)

            with ThreadPoolExecutor(PARALLEL) as pool:
                for row, response in enumerate(pool.map(ask, user_idx)):
                    self.degraded += response.degraded
                    self.model_versions.add(response.model_version)
                    for rank, item in enumerate(response.items):
                        col = data.item_index.get(item.item_id)
                        if col is not None:
                            out[row, col] = TOP_K - rank  # the served order, whatever the score scale
        return out


def _factory(args: argparse.Namespace, **params) -> ServedRecommender:
    if not getattr(args, "target", None):
        raise SystemExit("model 'served' needs --target host:port (a running gateway with the catalogue loaded)")
    return ServedRecommender(args.target)


def model_entries() -> dict[str, ModelEntry]:
    """The harness's "served" (training/registry.py): nothing to tune, the system serves as deployed."""
    return {"served": ModelEntry(_factory, lambda quick: [])}
