"""The Recommend pipeline: feedback → context → query vector → filtered retrieval → LM ranking → policy.

Each stage gets what is left of one budget. When ranking fails the answer falls back (retrieval order,
or popularity) and says so with `degraded`; only retrieval being down entirely is an error. The policy
stage (gateway/policy/) then shapes the ranked list: diversity, reserved new-item places, exploration
with logged propensities, and a reason for every item. A request with a session_id is a turn of a
conversation (gateway/conversation/): its session adds filters, exclusions, context and negative items and
the weighted free text, the answer is checked against the session's constraints, and the turn is stored.
Broad answers carry suggested refinements. The ranking tier is also sent the user's ratings and the request's
(or scenario's) rating weight: a model with a rating head predicts each candidate's rating, which every
ranked item carries, and with a weight > 0 orders by the blend of both objectives.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import numpy as np

from gateway.budget import Budget
from gateway.conversation.constraints import Constraint
from gateway.conversation.refinements import suggest_refinements
from gateway.conversation.turns import Conversation, TurnPlan
from gateway.conversation.vocabulary import VocabularyCache
from gateway.downstream import RankingClient, ShardedRetrievalClient, describe_rpc_error
from gateway.impressions import Impression, ImpressionLog
from gateway.policy.diversity import mmr_order
from gateway.policy.exploration import place, rng_for
from gateway.policy.feedback import read_feedback
from gateway.policy.reasons import ItemEvidence, matched_filters, reasons_for
from gateway.policy.scenarios import ScenarioPolicy, Scenarios
from gateway.settings import GatewaySettings
from gateway.store import GatewayStore, now_ms
from lmrec import tracing
from lmrec import validation as v
from lmrec.errors import DeadlineExceeded, DependencyUnavailable, FailedPrecondition
from lmrec.filters import AttributeFilter, as_filters, filter_messages, matches
from lmrec.slots import with_reserved_slots
from lmrec.v1 import common_pb2, gateway_service_pb2 as gw, retrieval_service_pb2 as rt

if TYPE_CHECKING:
    from gateway.metrics import GatewayMetrics
    from lmrec.catalog import CatalogItem

log = logging.getLogger(__name__)

FALLBACK_HISTORY = 50
POPULARITY_CACHE_S = 2.0
# The most recent negatives sent to the ranking tier (it uses its own, smaller window).
NEGATIVE_HISTORY = 50
# Diversity re-ranks this many times k best candidates (at least DIVERSITY_MIN_POOL).
DIVERSITY_POOL_FACTOR = 5
DIVERSITY_MIN_POOL = 50
# Refinements read the attributes of this many best candidates (gateway/conversation/refinements.py).
TOP_FOR_REFINEMENTS = 50
# The user's most recently rated items whose ratings go to the rating head (its user offset).
RATING_HISTORY = 1000


@dataclass
class Candidates:
    ids: list[str]
    scores: list[float]
    source: str


class RecommendPipeline:
    def __init__(self, settings: GatewaySettings, store: GatewayStore, ranking: RankingClient,
                 retrieval: ShardedRetrievalClient, scenarios: Scenarios | None = None,
                 impressions: ImpressionLog | None = None, metrics: GatewayMetrics | None = None,
                 conversation: Conversation | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.ranking = ranking
        self.retrieval = retrieval
        self.scenarios = scenarios or Scenarios(None)
        self.impressions = impressions
        self.conversation = conversation
        self.vocabulary = conversation.vocabulary if conversation is not None else VocabularyCache.for_store(store)
        self.model_version = ""
        self._popular: list[str] = []
        self._popular_at = 0.0

    async def recommend(self, request: gw.RecommendRequest, budget: Budget) -> gw.RecommendResponse:
        started = time.perf_counter()
        scenario = self.scenarios.resolve(request.scenario)
        policy = scenario.policy
        request_id = request.request_id or uuid.uuid4().hex
        reasons: list[tuple[str, str]] = []  # (kind for metrics, text for the client)
        catalog = self.store.catalog  # one snapshot for the whole request (the store swaps in new ones)
        with budget.stage("history") as stage:
            events = await self._feedback(request.user_id, budget, reasons)
            stage.annotate(events=len(events))
            feedback = read_feedback(events, request.recent_item_ids, policy.event_weights,
                                     self.settings.negative_rating_below)
            excluded = feedback.seen | set(request.exclude_item_ids)
        plan: TurnPlan | None = None
        if request.session_id:
            with budget.stage("session"):
                plan = await asyncio.to_thread(self._conversation().begin, request.user_id, request.session_id,
                                               request.query, request_id)
                excluded |= plan.excluded
        window = self.settings.history_window
        history, weights = _with_items(feedback.positive, feedback.weights, plan.context_items if plan else [], window)
        negatives, negative_weights = _with_items(feedback.negative, feedback.negative_weights,
                                                  plan.negative_items if plan else [], NEGATIVE_HISTORY)
        asked = as_filters([*((f.key, f.values) for f in request.filters), *policy.filters.items()])
        filters = [*asked, *as_filters(_session_filters(plan, len(asked)))]
        context = common_pb2.UserContext(
            user_id=request.user_id, history_item_ids=history, history_weights=weights,
            query=plan.query if plan else request.query, scenario=request.scenario, negative_item_ids=negatives,
            negative_weights=negative_weights)

        query_vector: list[float] = []
        # The model that served this request; mid-swap, concurrent requests may see different ones.
        version = ""
        ranking_ok = True
        with budget.stage("encode_context") as stage:
            stage.annotate(history_items=len(history), negative_items=len(negatives), query=bool(context.query))
            try:
                encoded = await self.ranking.encode_context(context, budget.timeout("encode_context"))
                if encoded.unknown_history_item_ids and await self._teach(catalog, encoded.unknown_history_item_ids,
                                                                          budget):
                    encoded = await self.ranking.encode_context(context, budget.timeout("encode_context"))
                # Items gone from the catalogue are rightly unknown; a catalogue item still unknown is not.
                if missing := sum(i in catalog for i in encoded.unknown_history_item_ids):
                    reasons.append(("ranking_unknown", f"{missing} history items unknown to the ranking tier, "
                                                       "left out of the context"))
                query_vector = list(encoded.vector)
                version = encoded.model_version or version
            except grpc.aio.AioRpcError as exc:
                ranking_ok = False
                reasons.append(("ranking_unavailable",
                                f"ranking unavailable for the context ({describe_rpc_error(exc)})"))

        want = max(policy.num_candidates or self.settings.num_candidates, request.k)
        if query_vector or (not ranking_ok and history):
            search = rt.SearchRequest(
                query_vector=query_vector,
                query_item_ids=[] if query_vector else history[-FALLBACK_HISTORY:],
                k=want, exclude_item_ids=sorted(excluded), filters=filter_messages(filters))
            with budget.stage("retrieval") as stage:
                found = await self.retrieval.search(search, budget.timeout("retrieval"))
                stage.annotate(k=want, filters=len(filters), candidates=len(found.results),
                               failed_shards=len(found.failed_shards))
            if found.failed_shards:
                reasons.append(("retrieval_partial", f"retrieval partial: {', '.join(found.failed_shards)} missing"))
            found_ids = [i for i, _ in found.results if i in catalog
                         and (plan is None or plan.meets(catalog[i].attributes))]
            scores = dict(found.results)
            candidates = Candidates(found_ids, [scores[i] for i in found_ids], "retrieval")
        else:
            candidates = self._popularity(catalog, excluded, filters, want)

        diversity = request.diversity if request.HasField("diversity") else policy.diversity
        rating_weight = request.rating_weight if request.HasField("rating_weight") else policy.rating_weight
        text_only: set[str] = set()
        attributions = {}
        predicted: dict[str, float] = {}  # the rating head's, for the candidates the ranker knows
        rating_weighed = False  # whether rating_weight ordered the answer: the model ranked it with a head
        vectors: dict[str, np.ndarray] = {}
        if candidates.source == "retrieval" and ranking_ok and candidates.ids:
            # Only Rank reads these (EncodeContext has already run without them).
            context.item_ratings.update(user_ratings(events, RATING_HISTORY))
            context.rating_weight = rating_weight
            with budget.stage("rank") as stage:
                stage.annotate(candidates=len(candidates.ids))
                try:
                    def rank():
                        return self.ranking.rank(context, candidates.ids, budget.timeout("rank"), explain=True,
                                                 vectors_for_top=max(DIVERSITY_POOL_FACTOR * request.k,
                                                                     DIVERSITY_MIN_POOL) if diversity else 0)

                    ranked = await rank()
                    if ranked.unknown_item_ids and await self._teach(catalog, ranked.unknown_item_ids, budget):
                        ranked = await rank()
                    unknown = set(ranked.unknown_item_ids)
                    stage.annotate(unknown=len(unknown))
                    if unknown:
                        reasons.append(("ranking_unknown", f"{len(unknown)} candidates unknown to the ranking tier, "
                                                           "placed last"))
                    attributions = dict(zip(candidates.ids, ranked.attributions))
                    predicted = {i: r for i, r in zip(candidates.ids, ranked.predicted_ratings) if i not in unknown}
                    rating_weighed = len(ranked.predicted_ratings) > 0
                    candidates = _order_by(candidates, list(ranked.scores))
                    text_only = set(ranked.text_only_item_ids)
                    vectors = {v.item_id: np.asarray(v.values, dtype=np.float32) for v in ranked.top_vectors}
                    version = ranked.model_version or version
                except grpc.aio.AioRpcError as exc:
                    reasons.append(("ranking_failed",
                                    f"ranking failed, retrieval order served ({describe_rpc_error(exc)})"))
                except DeadlineExceeded as exc:
                    reasons.append(("ranking_deadline", f"{exc}; retrieval order served"))

        # Answers the ranking tier had no part in report the last model it was seen serving.
        self.model_version = version or self.model_version
        version = version or self.model_version or "none"
        with budget.stage("policy") as stage:
            if diversity and vectors:
                candidates = _diversified(candidates, vectors, diversity)
            slots = request.new_item_slots or policy.new_item_slots
            # Only the ranker knows which items are text-only, so fallback answers keep their plain order.
            keep = with_reserved_slots(candidates.ids, request.k, slots, text_only.__contains__)
            slotted = {candidates.ids[p] for p in keep if p >= request.k}
            kept = set(keep)
            greedy = [*keep, *(p for p in range(len(candidates.ids)) if p not in kept)]
            exploration, parameter = _exploration(request, policy)
            placed = place([candidates.scores[p] for p in greedy], request.k, exploration, parameter,
                           policy.exploration_pool, rng_for(request_id))
            titles = {i: catalog[i].title for i in
                      {a.history_item_id for a in attributions.values() if a.history_item_id} if i in catalog}
            items, shown = [], []
            for position, (g, propensity, explored) in enumerate(zip(placed.indices, placed.propensities, placed.explored)):
                item_id = candidates.ids[greedy[g]]
                attribution = attributions.get(item_id)
                evidence = ItemEvidence(
                    history_item_id=attribution.history_item_id if attribution else "",
                    history_weight=attribution.history_weight if attribution else 0.0,
                    query_weight=attribution.query_weight if attribution else 0.0,
                    matched_filters=matched_filters(catalog[item_id].attributes, asked),
                    new_item_slot=item_id in slotted, explored=explored, propensity=propensity,
                    **(_turn_evidence(plan, catalog[item_id].attributes,
                                      attribution.history_item_id if attribution else "") if plan else {}))
                items.append(gw.RecommendedItem(
                    item_id=item_id, score=candidates.scores[greedy[g]], title=catalog[item_id].title,
                    reasons=reasons_for(evidence, candidates.source, plan.query_label if plan else request.query,
                                        titles), position=position, propensity=propensity,
                    predicted_rating=predicted.get(item_id)))
                shown.append(Impression(request_id, request.user_id, item_id, position, propensity, exploration,
                                        parameter, g, request.k, placed.pool_size, version, scenario.name, now_ms()))
            refinements = self._refinements(catalog, candidates.ids, asked, plan)
            stage.annotate(k=request.k, diversity=diversity, new_item_slots=slots, exploration=exploration,
                           explored=sum(placed.explored))
        if plan is not None:
            with budget.stage("session"):
                await asyncio.to_thread(self._conversation().end, request.user_id, request.session_id, plan,
                                        request_id, [i.item_id for i in items])
        if self.impressions is not None:
            self.impressions.record(shown)
        if self.metrics is not None:
            filled = min(slots, sum(candidates.ids[p] in text_only for p in keep)) if slots else 0
            self.metrics.observe_recommend(time.perf_counter() - started, budget.timings, candidates.source,
                                           [kind for kind, _ in reasons], slots, filled, scenario.label,
                                           exploration, sum(placed.explored))
        log.debug("Recommend %s: %d items from %s (%s)", request_id, len(items), candidates.source,
                  ", ".join(kind for kind, _ in reasons) or "not degraded")
        tracing.annotate({"lmrec.request_id": request_id, "lmrec.k": request.k, "lmrec.scenario": scenario.name,
                          "lmrec.source": candidates.source, "lmrec.candidates": len(candidates.ids),
                          "lmrec.items": len(items), "lmrec.model_version": version, "lmrec.degraded": bool(reasons),
                          "lmrec.degraded_reasons": [kind for kind, _ in reasons]})
        return gw.RecommendResponse(
            items=items, model_version=version, degraded=bool(reasons),
            degraded_reason="; ".join(text for _, text in reasons), source=candidates.source,
            timings=[common_pb2.StageTiming(stage=s, millis=ms) for s, ms in budget.timings],
            request_id=request_id, scenario=scenario.name, policy=exploration, refinements=refinements,
            session_turn=plan.number if plan else 0,
            # The weight that ordered the answer: none without a rating head, or when the model did not rank.
            rating_weight=rating_weight if rating_weighed else 0.0)

    async def _teach(self, catalog: Mapping[str, CatalogItem], item_ids, budget: Budget) -> int:
        """Encodes catalogue items the ranking replica lacks (a new or restarted one, or one another replica
        took the upsert on), so it can score them; returns how many it was given."""
        items = [(i, catalog[i].text) for i in item_ids if i in catalog]
        if items:
            await self.ranking.encode_items(items, budget.timeout("encode unknown items"))
        return len(items)

    async def _feedback(self, user_id: str, budget: Budget, reasons: list[tuple[str, str]]):
        """The user's stored events; when the state store cannot answer within the budget, none, and the
        answer says so (it still honours the request's own recent items and exclusions)."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.store.feedback, user_id), budget.timeout("history"))
        except (DependencyUnavailable, asyncio.TimeoutError) as exc:
            reasons.append(("state_unavailable", f"stored feedback unavailable ({exc or 'timed out'}); "
                                                 "answered from the request alone"))
            return []

    def _conversation(self) -> Conversation:
        if self.conversation is None:
            raise FailedPrecondition("session_id: this gateway keeps no sessions")
        return self.conversation

    def _refinements(self, catalog: Mapping[str, CatalogItem], ranked: list[str], asked: Sequence[AttributeFilter],
                     plan: TurnPlan | None) -> list[gw.Refinement]:
        """Chips when the best candidates are spread over an attribute's values (gateway/conversation/
        refinements.py); the request's filters and the session's constraints are never suggested."""
        said = [Constraint(f.key, f.values) for f in asked] + (plan.active if plan else [])
        chips = suggest_refinements([catalog[i].attributes for i in ranked[:TOP_FOR_REFINEMENTS] if i in catalog],
                                    self.vocabulary.get(), said)
        return [gw.Refinement(text=c.text, key=c.key, value=c.value) for c in chips]

    def _popularity(self, catalog: Mapping[str, CatalogItem], excluded: set[str], filters: Sequence[AttributeFilter],
                    want: int) -> Candidates:
        """Most-interacted catalogue items, honouring exclusions and filters: the cold-start answer."""
        now = time.monotonic()
        if now - self._popular_at > POPULARITY_CACHE_S:
            counts = self.store.popularity
            self._popular = sorted(catalog, key=lambda i: (-counts.get(i, 0), i))
            self._popular_at = now
        counts = self.store.popularity
        top = max(counts.values(), default=1) or 1
        ids = []
        for item_id in self._popular:
            if item_id in excluded or item_id not in catalog:
                continue
            if not matches(catalog[item_id].attributes, filters):
                continue
            ids.append(item_id)
            if len(ids) == want:
                break
        return Candidates(ids, [counts.get(i, 0) / top for i in ids], "popularity")


def user_ratings(events: list[tuple[str, int, float]], limit: int) -> dict[str, float]:
    """The user's ratings by item id from (item_id, event_type, value) events, oldest first: each item's
    latest RATING value, for the `limit` most recently rated items (low ratings too: they say how the user
    rates, though the item is a negative for the context)."""
    latest: dict[str, float] = {}
    for item_id, event_type, value in events:
        if event_type == gw.EVENT_TYPE_RATING:
            latest.pop(item_id, None)
            latest[item_id] = float(value)
    return dict(list(latest.items())[-limit:])


def _with_items(ids: list[str], weights: list[float], added: list[tuple[str, float]], window: int
                ) -> tuple[list[str], list[float]]:
    """The user's items (oldest first) with the session's added at the newest end, each item once, the
    last `window` of them."""
    if not added:
        return ids[-window:], weights[-window:]
    moved = {i for i, _ in added}
    kept = [(i, w) for i, w in zip(ids, weights) if i not in moved] + list(added)
    kept = kept[-window:]
    return [i for i, _ in kept], [w for _, w in kept]


def _session_filters(plan: TurnPlan | None, taken: int) -> list[tuple[str, list[str]]]:
    """The session's newest filters that fit beside the `taken` request's and scenario's in what retrieval
    accepts (MAX_SEARCH_FILTERS); any left out are still checked on the answer (`TurnPlan.meets`)."""
    room = v.MAX_SEARCH_FILTERS - taken
    if plan is None or room <= 0:
        return []
    return plan.filters()[-room:]


def _turn_evidence(plan: TurnPlan, attributes: dict[str, list[str]], history_item_id: str) -> dict:
    """The session's part of an item's evidence: the constraints it meets, whether the item its reason
    cites was pointed at in a turn, and what the turn could not read."""
    return {"turn_matches": plan.matches(attributes), "pointed_turn": plan.pointed.get(history_item_id, 0),
            "turn_notes": tuple(plan.notes)}


def _exploration(request: gw.RecommendRequest, policy: ScenarioPolicy) -> tuple[str, float]:
    """The request's exploration policy and parameter, or the scenario's."""
    chosen = request.exploration.policy
    if chosen == gw.EXPLORATION_POLICY_GREEDY:
        return "greedy", 0.0
    if chosen == gw.EXPLORATION_POLICY_EPSILON:
        return "epsilon", request.exploration.epsilon
    if chosen == gw.EXPLORATION_POLICY_SOFTMAX:
        return "softmax", request.exploration.temperature
    parameter = {"epsilon": policy.epsilon, "softmax": policy.temperature}.get(policy.exploration, 0.0)
    return policy.exploration, parameter


def _diversified(candidates: Candidates, vectors: dict[str, np.ndarray], diversity: float) -> Candidates:
    """MMR over the best candidates that came with vectors; the rest keep their order below them."""
    top = [p for p, i in enumerate(candidates.ids) if i in vectors]
    if len(top) < 2:
        return candidates
    order = mmr_order(np.asarray([candidates.scores[p] for p in top]),
                      np.stack([vectors[candidates.ids[p]] for p in top]), len(top), diversity)
    moved = [top[o] for o in order]
    chosen = set(moved)
    positions = [*moved, *(p for p in range(len(candidates.ids)) if p not in chosen)]
    return Candidates([candidates.ids[p] for p in positions], [candidates.scores[p] for p in positions],
                      candidates.source)


def _order_by(candidates: Candidates, scores: list[float]) -> Candidates:
    # Stable sort: candidates the ranker does not know (-inf) keep their retrieval order at the end.
    values = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-values, kind="stable")
    known = order[np.isfinite(values[order])]
    unknown = order[~np.isfinite(values[order])]
    floor = float(values[known].min()) if len(known) else 0.0
    return Candidates([candidates.ids[i] for i in (*known, *unknown)],
                      [float(values[i]) for i in known] + [floor - 1.0] * len(unknown), "ranked")
