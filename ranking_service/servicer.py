"""Thin gRPC servicer of the ranking tier: validation, deadlines, batching; model logic lives in ranker.py."""

from __future__ import annotations

import math
import time

import grpc
import numpy as np

from lmrec import validation as v
from lmrec.v1 import ranking_service_pb2 as pb
from lmrec.v1 import ranking_service_pb2_grpc as pb_grpc
from lmrec.v1.common_pb2 import UserContext
from ranking_service.hot_swap import Serving, ServingHolder
from ranking_service.ranker import RankContext

MAX_CANDIDATES = 10_000
MAX_HISTORY = 5_000
MAX_NEGATIVES = 1_000
MAX_RATINGS = 5_000
MAX_TOP_VECTORS = 1_000
# The batcher lanes (ranking_service/server.py:new_batcher): queries and item texts may use two encoders.
QUERY_LANE, ITEM_LANE = "query", "item"


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def rank_context(ctx: UserContext, field: str) -> RankContext:
    v.check_ids(ctx.history_item_ids, f"{field}.history_item_ids", MAX_HISTORY)
    v.check_ids(ctx.negative_item_ids, f"{field}.negative_item_ids", MAX_NEGATIVES)
    v.check_text(ctx.query, f"{field}.query", v.MAX_QUERY_CHARS)
    if not (math.isfinite(ctx.rating_weight) and ctx.rating_weight >= 0):
        raise v.InvalidArgument(f"{field}.rating_weight", f"must be finite and >= 0, got {ctx.rating_weight}")
    return RankContext(ctx.user_id, list(ctx.history_item_ids), ctx.query.strip(), ctx.scenario,
                       _weights(ctx.history_weights, len(ctx.history_item_ids), f"{field}.history_weights"),
                       tuple(ctx.negative_item_ids),
                       _weights(ctx.negative_weights, len(ctx.negative_item_ids), f"{field}.negative_weights"),
                       _ratings(ctx.item_ratings, f"{field}.item_ratings"), float(ctx.rating_weight))


def _ratings(values, field: str) -> tuple[tuple[str, float], ...]:
    """(item id, rating) pairs: valid ids, finite ratings."""
    if len(values) > MAX_RATINGS:
        raise v.InvalidArgument(field, f"{len(values)} ratings, at most {MAX_RATINGS} allowed")
    for item_id, rating in values.items():
        v.require_id(item_id, f"{field} key")
        if not math.isfinite(rating):
            raise v.InvalidArgument(f"{field}[{item_id}]", "must be finite")
    return tuple(sorted(values.items()))


def _weights(values, n_items: int, field: str) -> tuple[float, ...]:
    """Per-item weights: none (1 each) or one finite, non-negative weight per item."""
    weights = tuple(values)
    if weights and len(weights) != n_items:
        raise v.InvalidArgument(field, f"{len(weights)} weights for {n_items} items")
    if any(not np.isfinite(w) or w < 0 for w in weights):
        raise v.InvalidArgument(field, "must be finite and >= 0")
    return weights


class RankingServicer(pb_grpc.RankingServiceServicer):
    """Every call reads `holder.current` once, so a hot swap never mixes two models within one call."""

    def __init__(self, holder: ServingHolder) -> None:
        self._holder = holder

    @staticmethod
    async def _query_vector(serving: Serving, ctx: RankContext, deadline: float | None) -> np.ndarray | None:
        if not ctx.query:
            return None
        # A Recommend asks for the same query twice (EncodeContext, then Rank): encode it once.
        cached = serving.query_cache.get(ctx.query)
        if cached is None:
            cached = (await serving.batcher.submit([ctx.query], deadline, QUERY_LANE))[0]
            serving.query_cache.put(ctx.query, cached)
        return cached

    async def Encode(self, request: pb.EncodeRequest, context) -> pb.EncodeResponse:
        v.check_batch(len(request.inputs), "inputs")
        texts, ids = [], []
        for i, item in enumerate(request.inputs):
            if not item.text.strip():
                raise v.InvalidArgument(f"inputs[{i}].text", "must not be empty")
            v.check_text(item.text, f"inputs[{i}].text", v.MAX_ITEM_TEXT_CHARS)
            if item.item_id:
                v.require_id(item.item_id, f"inputs[{i}].item_id")
            texts.append(item.text)
            ids.append(item.item_id)
        serving = self._holder.current
        model = serving.model
        text_vectors, hit = model.known_text_vectors(ids, texts)
        if not hit.all():
            misses = [t for t, h in zip(texts, hit) if not h]
            text_vectors[~hit] = await serving.batcher.submit(misses, _deadline(context), ITEM_LANE)
        vectors = model.ranker.item_vectors(text_vectors, ids)
        keyed = [i for i, item_id in enumerate(ids) if item_id]
        if keyed:
            model.store.put([ids[i] for i in keyed], [texts[i] for i in keyed], vectors[keyed])
        return pb.EncodeResponse(vectors=[pb.Vector(values=row) for row in vectors],
                                 model_version=model.manifest.model_version)

    async def EncodeContext(self, request: pb.EncodeContextRequest, context) -> pb.EncodeContextResponse:
        ctx = rank_context(request.context, "context")
        serving = self._holder.current
        query_vector = await self._query_vector(serving, ctx, _deadline(context))
        vector = serving.model.ranker.context_vector(ctx, query_vector)
        history = list(request.context.history_item_ids)
        _, known = serving.model.store.gather(history)
        return pb.EncodeContextResponse(vector=[] if vector is None else vector,
                                        model_version=serving.model.manifest.model_version,
                                        unknown_history_item_ids=[i for i, k in zip(history, known) if not k])

    async def Rank(self, request: pb.RankRequest, context) -> pb.RankResponse:
        ctx = rank_context(request.context, "context")
        candidates = v.check_ids(request.candidate_item_ids, "candidate_item_ids", MAX_CANDIDATES)
        v.check_range(request.vectors_for_top, "vectors_for_top", 0, MAX_TOP_VECTORS)
        serving = self._holder.current
        model = serving.model
        query_vector = await self._query_vector(serving, ctx, _deadline(context))
        reps, known = model.store.gather(candidates)
        scores, found, ratings = model.ranker.rank(ctx, query_vector, reps, explain=request.explain,
                                                   candidate_ids=candidates, known=known)
        scores = scores.astype(np.float32)
        scores[~known] = -np.inf
        text_only = model.ranker.text_only(candidates) or [False] * len(candidates)
        reply = pb.RankResponse(
            scores=scores,
            unknown_item_ids=[c for c, k in zip(candidates, known) if not k],
            model_version=model.manifest.model_version,
            text_only_item_ids=[c for c, k, t in zip(candidates, known, text_only) if k and t],
            predicted_ratings=[] if ratings is None else ratings.tolist(),
        )
        if found is not None:
            reply.attributions.extend(
                pb.Attribution(history_item_id=found.history_item_ids[i] if i >= 0 and k else "",
                               history_weight=d if k else 0.0, query_weight=q if k else 0.0)
                for i, d, q, k in zip(found.history_index.tolist(), found.history_drop.tolist(),
                                      found.query_part.tolist(), known))
        if request.vectors_for_top:
            order = np.argsort(-scores, kind="stable")[: request.vectors_for_top]
            order = order[known[order]]
            text = model.ranker.text_vectors(reps[order])
            # tolist(): protobuf converts numpy scalars one by one, ~5x slower.
            reply.top_vectors.extend(pb.ItemVector(item_id=candidates[i], values=row)
                                     for i, row in zip(order, text.tolist()))
        return reply

    async def ForgetItems(self, request: pb.ForgetItemsRequest, context) -> pb.ForgetItemsResponse:
        ids = v.check_ids(request.item_ids, "item_ids", v.MAX_BATCH)
        v.check_batch(len(ids), "item_ids")
        return pb.ForgetItemsResponse(forgotten_count=self._holder.current.model.store.delete(ids))

    async def GetModelInfo(self, request, context) -> pb.GetModelInfoResponse:
        m = self._holder.current.model
        return pb.GetModelInfoResponse(
            model_version=m.manifest.model_version,
            encoder_name=m.manifest.encoder.base_model,
            ranker_kind=m.manifest.ranker_kind,
            dimension=m.manifest.served_dimension,
            precision=m.runtime.precision,
            execution_provider=m.runtime.providers[0],
            known_item_count=len(m.store),
            item_precision=m.item_text_encoder.precision,
            rating_head=m.ranker.rating_head is not None,
        )
