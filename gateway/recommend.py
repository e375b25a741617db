"""The Recommend pipeline: context → query vector → filtered retrieval → LM ranking → top k.

Each stage gets what is left of one budget. When ranking fails the answer falls back (retrieval order,
or popularity) and says so with `degraded`; only retrieval being down entirely is an error.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import numpy as np

from gateway.budget import Budget
from gateway.downstream import RankingClient, ShardedRetrievalClient, describe_rpc_error
from gateway.settings import GatewaySettings
from gateway.store import GatewayStore
from lmrec.errors import DeadlineExceeded
from lmrec.slots import with_reserved_slots
from lmrec.v1 import common_pb2, gateway_service_pb2 as gw, retrieval_service_pb2 as rt

if TYPE_CHECKING:
    from gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

FALLBACK_HISTORY = 50
POPULARITY_CACHE_S = 2.0


@dataclass
class Candidates:
    ids: list[str]
    scores: list[float]
    source: str


class RecommendPipeline:
    def __init__(self, settings: GatewaySettings, store: GatewayStore, ranking: RankingClient,
                 retrieval: ShardedRetrievalClient, metrics: GatewayMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.ranking = ranking
        self.retrieval = retrieval
        self.model_version = ""
        self._popular: list[str] = []
        self._popular_at = 0.0

    async def recommend(self, request: gw.RecommendRequest, budget: Budget) -> gw.RecommendResponse:
        started = time.perf_counter()
        reasons: list[tuple[str, str]] = []  # (kind for metrics, text for the client)
        with budget.stage("history"):
            history = _dedupe_keep_last(self.store.history_item_ids(request.user_id) + list(request.recent_item_ids))
            excluded = set(history) | set(request.exclude_item_ids)
        context = common_pb2.UserContext(
            user_id=request.user_id, history_item_ids=history[-self.settings.history_window:],
            query=request.query, scenario=request.scenario)

        query_vector: list[float] = []
        # The model that served this request; mid-swap, concurrent requests may see different ones.
        version = ""
        ranking_ok = True
        with budget.stage("encode_context"):
            try:
                encoded = await self.ranking.encode_context(context, budget.timeout("encode_context"))
                query_vector = list(encoded.vector)
                version = encoded.model_version or version
            except grpc.aio.AioRpcError as exc:
                ranking_ok = False
                reasons.append(("ranking_unavailable",
                                f"ranking unavailable for the context ({describe_rpc_error(exc)})"))

        want = max(self.settings.num_candidates, request.k)
        if query_vector or (not ranking_ok and history):
            search = rt.SearchRequest(
                query_vector=query_vector,
                query_item_ids=[] if query_vector else history[-FALLBACK_HISTORY:],
                k=want, exclude_item_ids=sorted(excluded), filters=request.filters)
            with budget.stage("retrieval"):
                found = await self.retrieval.search(search, budget.timeout("retrieval"))
            if found.failed_shards:
                reasons.append(("retrieval_partial", f"retrieval partial: {', '.join(found.failed_shards)} missing"))
            found_ids = [i for i, _ in found.results if i in self.store.catalog]
            scores = dict(found.results)
            candidates = Candidates(found_ids, [scores[i] for i in found_ids], "retrieval")
        else:
            candidates = self._popularity(excluded, request.filters, want)

        text_only: set[str] = set()
        if candidates.source == "retrieval" and ranking_ok and candidates.ids:
            with budget.stage("rank"):
                try:
                    ranked = await self.ranking.rank(context, candidates.ids, budget.timeout("rank"))
                    candidates = _order_by(candidates, list(ranked.scores))
                    text_only = set(ranked.text_only_item_ids)
                    version = ranked.model_version or version
                except grpc.aio.AioRpcError as exc:
                    reasons.append(("ranking_failed",
                                    f"ranking failed, retrieval order served ({describe_rpc_error(exc)})"))
                except DeadlineExceeded as exc:
                    reasons.append(("ranking_deadline", f"{exc}; retrieval order served"))

        # Answers the ranking tier had no part in report the last model it was seen serving.
        self.model_version = version or self.model_version
        # Only the ranker knows which items are text-only, so fallback answers keep their plain order.
        keep = with_reserved_slots(candidates.ids, request.k, request.new_item_slots, text_only.__contains__)
        items = [gw.RecommendedItem(item_id=candidates.ids[p], score=candidates.scores[p],
                                    title=self.store.catalog[candidates.ids[p]].title) for p in keep]
        if self.metrics is not None:
            filled = (min(request.new_item_slots, sum(candidates.ids[p] in text_only for p in keep))
                      if request.new_item_slots else 0)
            self.metrics.observe_recommend(time.perf_counter() - started, budget.timings, candidates.source,
                                           [kind for kind, _ in reasons], request.new_item_slots, filled)
        return gw.RecommendResponse(
            items=items, model_version=version or self.model_version or "none", degraded=bool(reasons),
            degraded_reason="; ".join(text for _, text in reasons), source=candidates.source,
            timings=[common_pb2.StageTiming(stage=s, millis=ms) for s, ms in budget.timings])

    def _popularity(self, excluded: set[str], filters, want: int) -> Candidates:
        """Most-interacted catalogue items, honouring exclusions and filters: the cold-start answer."""
        now = time.monotonic()
        if now - self._popular_at > POPULARITY_CACHE_S:
            counts = self.store.popularity
            self._popular = sorted(self.store.catalog, key=lambda i: (-counts.get(i, 0), i))
            self._popular_at = now
        counts = self.store.popularity
        top = max(counts.values(), default=1) or 1
        ids = []
        for item_id in self._popular:
            if item_id in excluded or item_id not in self.store.catalog:
                continue
            if filters and not _matches(self.store.catalog[item_id].attributes, filters):
                continue
            ids.append(item_id)
            if len(ids) == want:
                break
        return Candidates(ids, [counts.get(i, 0) / top for i in ids], "popularity")


def _order_by(candidates: Candidates, scores: list[float]) -> Candidates:
    # Stable sort: candidates the ranker does not know (-inf) keep their retrieval order at the end.
    values = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-values, kind="stable")
    known = order[np.isfinite(values[order])]
    unknown = order[~np.isfinite(values[order])]
    floor = float(values[known].min()) if len(known) else 0.0
    return Candidates([candidates.ids[i] for i in (*known, *unknown)],
                      [float(values[i]) for i in known] + [floor - 1.0] * len(unknown), "ranked")


def _matches(attributes: dict[str, list[str]], filters) -> bool:
    return all(set(attributes.get(f.key, ())) & set(f.values) for f in filters)


def _dedupe_keep_last(item_ids: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item_id in item_ids:
        seen.pop(item_id, None)
        seen[item_id] = None
    return list(seen)
