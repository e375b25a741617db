"""The public GatewayService: validation and orchestration of catalogue, feedback and user-data calls."""

from __future__ import annotations

import asyncio
import math

import grpc

from gateway.audit import AuditLog
from gateway.budget import Budget
from gateway.conversation.turns import Conversation
from gateway.downstream import RankingClient, ShardedRetrievalClient, as_lmrec_error
from gateway.impressions import ImpressionLog
from gateway.policy.feedback import is_negative
from gateway.recommend import RecommendPipeline
from gateway.reindex import note_upsert_version
from gateway.settings import GatewaySettings
from gateway.store import Event, GatewayStore, now_ms
from lmrec import validation as v
from lmrec.catalog import item_message
from lmrec.catalog import CatalogItem
from lmrec.erasure import user_hash
from lmrec.filters import parse_filters
from lmrec.errors import FailedPrecondition, InvalidArgument
from lmrec.v1 import gateway_service_pb2 as gw, gateway_service_pb2_grpc as gw_grpc
from lmrec.v1 import retrieval_service_pb2 as rt

MAX_K = 1000
MAX_ITEM_BATCH = 256  # items per UpsertItems: each may carry 40 KB of text
MAX_ID_BATCH = 1000  # ids per GetItems / DeleteItems
MAX_RECENT_ITEMS = 1000  # a request's own recent_item_ids
MAX_EVENT_BATCH = 10_000
MAX_TITLE_CHARS = 1000
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_VALUES = 64  # per item, over all its attributes
MAX_SESSION_ID_BYTES = 128
WRITE_TIMEOUT_S = 60.0


def validate_recommend(request: gw.RecommendRequest) -> None:
    v.require_id(request.user_id, "user_id")
    v.check_range(request.k, "k", 1, MAX_K)
    v.check_range(request.new_item_slots, "new_item_slots", 0, request.k)
    v.check_ids(request.recent_item_ids, "recent_item_ids", MAX_RECENT_ITEMS)
    v.check_ids(request.exclude_item_ids, "exclude_item_ids", v.MAX_BATCH)
    v.check_text(request.query, "query", v.MAX_QUERY_CHARS)
    v.check_text(request.scenario, "scenario", 64)
    parse_filters(request.filters, "filters")
    if request.HasField("diversity") and not 0.0 <= request.diversity <= 1.0:  # also refuses NaN
        raise InvalidArgument("diversity", f"must be in 0..1, got {request.diversity}")
    if request.HasField("rating_weight") and not (math.isfinite(request.rating_weight) and request.rating_weight >= 0):
        raise InvalidArgument("rating_weight", f"must be finite and >= 0, got {request.rating_weight}")
    exploration = request.exploration
    if exploration.policy not in gw.ExplorationPolicy.values():
        raise InvalidArgument("exploration.policy", f"unknown policy {exploration.policy}")
    if exploration.policy == gw.EXPLORATION_POLICY_EPSILON and not 0.0 <= exploration.epsilon <= 1.0:
        raise InvalidArgument("exploration.epsilon", f"must be in 0..1, got {exploration.epsilon}")
    if exploration.policy == gw.EXPLORATION_POLICY_SOFTMAX and not exploration.temperature > 0:
        raise InvalidArgument("exploration.temperature", f"must be > 0, got {exploration.temperature}")
    if request.request_id:
        v.require_id(request.request_id, "request_id")
    check_session_id(request.session_id, "session_id")


def check_session_id(session_id: str, field: str) -> None:
    """Empty (no session) or an id of 1..MAX_SESSION_ID_BYTES bytes."""
    if len(session_id.encode("utf-8")) > MAX_SESSION_ID_BYTES:
        raise InvalidArgument(field, f"longer than {MAX_SESSION_ID_BYTES} bytes")
    if session_id and not session_id.strip():
        raise InvalidArgument(field, "must not be blank")


def catalog_item(item, field: str) -> CatalogItem:
    v.require_id(item.item_id, f"{field}.item_id")
    v.check_text(item.title, f"{field}.title", MAX_TITLE_CHARS)
    v.check_text(item.text, f"{field}.text", v.MAX_ITEM_TEXT_CHARS)
    if not (item.title.strip() or item.text.strip()):
        raise InvalidArgument(f"{field}.text", "an item needs a title or a text for the language model")
    if len(item.attributes) > MAX_ATTRIBUTES:
        raise InvalidArgument(f"{field}.attributes", f"at most {MAX_ATTRIBUTES} attributes allowed")
    if sum(len(values.values) for values in item.attributes.values()) > MAX_ATTRIBUTE_VALUES:
        raise InvalidArgument(f"{field}.attributes", f"at most {MAX_ATTRIBUTE_VALUES} values over all attributes")
    attributes = {}
    for key, values in item.attributes.items():
        v.require_id(key, f"{field}.attributes key")
        attributes[key] = v.check_ids(values.values, f"{field}.attributes[{key}]", MAX_ATTRIBUTE_VALUES)
    return CatalogItem(item.item_id, item.title, item.text.strip() or item.title, attributes)


def feedback_event(event: gw.FeedbackEvent, field: str) -> Event:
    v.require_id(event.user_id, f"{field}.user_id")
    v.require_id(event.item_id, f"{field}.item_id")
    if event.event_type == gw.EVENT_TYPE_UNSPECIFIED or event.event_type not in gw.EventType.values():
        raise InvalidArgument(f"{field}.event_type", "must be VIEW, CLICK, RATING, PURCHASE or DISMISS")
    if not math.isfinite(event.value):
        raise InvalidArgument(f"{field}.value", "must be finite")
    v.check_text(event.scenario, f"{field}.scenario", 64)
    if event.request_id:
        v.require_id(event.request_id, f"{field}.request_id")
    check_session_id(event.session_id, f"{field}.session_id")
    try:
        ts = event.event_time.ToMilliseconds() if event.HasField("event_time") else now_ms()
    except ValueError as exc:  # seconds or nanos outside the Timestamp's valid range
        raise InvalidArgument(f"{field}.event_time", str(exc)) from None
    return Event(event.user_id, event.item_id, int(event.event_type), float(event.value), ts, event.scenario,
                 event.request_id)


class GatewayServicer(gw_grpc.GatewayServiceServicer):
    def __init__(self, settings: GatewaySettings, store: GatewayStore, ranking: RankingClient,
                 retrieval: ShardedRetrievalClient, pipeline: RecommendPipeline,
                 impressions: ImpressionLog | None = None, conversation: Conversation | None = None,
                 audit: AuditLog | None = None) -> None:
        self.settings = settings
        self.store = store
        self.ranking = ranking
        self.retrieval = retrieval
        self.pipeline = pipeline
        self.impressions = impressions
        self.conversation = conversation
        self.audit = audit

    def _budget(self, context, default_s: float) -> Budget:
        return Budget.from_context(context.time_remaining(), default_s, self.settings.reserve_ms / 1000)

    async def Recommend(self, request: gw.RecommendRequest, context) -> gw.RecommendResponse:
        validate_recommend(request)
        budget = self._budget(context, self.settings.default_deadline_ms / 1000)
        return await self.pipeline.recommend(request, budget)

    async def UpsertItems(self, request: gw.UpsertItemsRequest, context) -> gw.UpsertItemsResponse:
        v.check_batch(len(request.items), "items", MAX_ITEM_BATCH)
        items = [catalog_item(item, f"items[{i}]") for i, item in enumerate(request.items)]
        if len({i.item_id for i in items}) != len(items):
            raise InvalidArgument("items", "an item_id appears twice in one batch")
        budget = self._budget(context, WRITE_TIMEOUT_S)
        try:
            encoded = await self.ranking.encode_items([(i.item_id, i.text) for i in items], budget.timeout("encode"))
        except grpc.aio.AioRpcError as exc:
            raise as_lmrec_error("ranking encode", exc) from None
        await self.retrieval.upsert(
            [rt.IndexedItem(item_id=i.item_id, vector=vec, attributes=request.items[n].attributes)
             for n, (i, vec) in enumerate(zip(items, encoded.vectors))], budget.timeout("retrieval upsert"))
        await asyncio.to_thread(note_upsert_version, self.store, encoded.model_version)
        await asyncio.to_thread(self.store.upsert_items, items)
        await self._audit("UpsertItems", len(items))
        return gw.UpsertItemsResponse(upserted_count=len(items))

    async def DeleteItems(self, request: gw.DeleteItemsRequest, context) -> gw.DeleteItemsResponse:
        ids = v.check_ids(request.item_ids, "item_ids", MAX_ID_BATCH)
        v.check_batch(len(ids), "item_ids", MAX_ID_BATCH)
        budget = self._budget(context, WRITE_TIMEOUT_S)
        # Retrieval first: once it returns, the items can no longer be recommended.
        await self.retrieval.delete(ids, budget.timeout("retrieval delete"))
        deleted = await asyncio.to_thread(self.store.delete_items, ids)
        try:
            await self.ranking.forget(ids, budget.timeout("ranking forget"))
        except grpc.aio.AioRpcError:
            pass  # stale ranker vectors are harmless: retrieval never returns these ids again
        await self._audit("DeleteItems", deleted)
        return gw.DeleteItemsResponse(deleted_count=deleted)

    async def _audit(self, action: str, count: int) -> None:
        if self.audit is not None:
            await asyncio.to_thread(self.audit.record, action, count)

    async def GetItems(self, request: gw.GetItemsRequest, context) -> gw.GetItemsResponse:
        ids = v.check_ids(request.item_ids, "item_ids", MAX_ID_BATCH)
        found, missing = [], []
        for item_id in ids:
            item = self.store.catalog.get(item_id)
            if item is None:
                missing.append(item_id)
                continue
            found.append(item_message(item))
        return gw.GetItemsResponse(items=found, missing_item_ids=missing)

    async def RecordFeedback(self, request: gw.RecordFeedbackRequest, context) -> gw.RecordFeedbackResponse:
        v.check_batch(len(request.events), "events", MAX_EVENT_BATCH)
        events = [feedback_event(e, f"events[{i}]") for i, e in enumerate(request.events)]
        in_sessions = [(m.session_id, e) for m, e in zip(request.events, events) if m.session_id]
        if in_sessions and self.conversation is None:
            raise FailedPrecondition("events.session_id: this gateway keeps no sessions")
        await asyncio.to_thread(self.store.record_events, events)
        by_session: dict[tuple[str, str], list[tuple[str, bool]]] = {}
        for session_id, e in in_sessions:
            accepted = not is_negative(e.event_type, e.value, self.settings.negative_rating_below)
            by_session.setdefault((e.user_id, session_id), []).append((e.item_id, accepted))
        for (user_id, session_id), items in by_session.items():
            await asyncio.to_thread(self.conversation.record_feedback, user_id, session_id, items)
        return gw.RecordFeedbackResponse(accepted_count=len(events))

    async def GetUserHistory(self, request: gw.GetUserHistoryRequest, context) -> gw.GetUserHistoryResponse:
        v.require_id(request.user_id, "user_id")
        out = []
        for e in await asyncio.to_thread(self.store.history, request.user_id):
            event = gw.FeedbackEvent(user_id=e.user_id, item_id=e.item_id, event_type=e.event_type,
                                     value=e.value, scenario=e.scenario, request_id=e.request_id)
            event.event_time.FromMilliseconds(e.timestamp_ms)
            out.append(event)
        shown = []
        logged = await asyncio.to_thread(self.impressions.for_user, request.user_id) if self.impressions else []
        for i in logged:
            impression = gw.Impression(request_id=i.request_id, user_id=i.user_id, item_id=i.item_id,
                                       position=i.position, propensity=i.propensity, policy=i.policy,
                                       model_version=i.model_version, scenario=i.scenario)
            impression.shown_time.FromMilliseconds(i.time_ms)
            shown.append(impression)
        return gw.GetUserHistoryResponse(events=out, impressions=shown)

    async def DeleteUserData(self, request: gw.DeleteUserDataRequest, context) -> gw.DeleteUserDataResponse:
        v.require_id(request.user_id, "user_id")
        return await asyncio.to_thread(self._delete_user_data, request.user_id)

    def _delete_user_data(self, user_id: str) -> gw.DeleteUserDataResponse:
        # The event store last: it lists the user as erased, and on PostgreSQL that has every user table
        # rewritten (gateway/store/compaction.py), so it must follow the other deletions.
        impressions = self.impressions.delete_user(user_id) if self.impressions is not None else 0
        sessions = self.conversation.delete_user(user_id) if self.conversation is not None else 0
        events = self.store.delete_user(user_id)
        if self.audit is not None:
            self.audit.record("DeleteUserData", events + impressions + sessions, user_hash(user_id),
                              events=events, impressions=impressions, sessions=sessions)
        return gw.DeleteUserDataResponse(deleted_event_count=events, deleted_impression_count=impressions,
                                         deleted_session_count=sessions)
