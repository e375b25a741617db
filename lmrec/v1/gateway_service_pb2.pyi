import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from lmrec.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExplorationPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPLORATION_POLICY_UNSPECIFIED: _ClassVar[ExplorationPolicy]
    EXPLORATION_POLICY_GREEDY: _ClassVar[ExplorationPolicy]
    EXPLORATION_POLICY_EPSILON: _ClassVar[ExplorationPolicy]
    EXPLORATION_POLICY_SOFTMAX: _ClassVar[ExplorationPolicy]

class ReasonKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_KIND_UNSPECIFIED: _ClassVar[ReasonKind]
    REASON_KIND_HISTORY_ITEM: _ClassVar[ReasonKind]
    REASON_KIND_QUERY: _ClassVar[ReasonKind]
    REASON_KIND_ATTRIBUTE: _ClassVar[ReasonKind]
    REASON_KIND_POPULAR: _ClassVar[ReasonKind]
    REASON_KIND_NEW_ITEM: _ClassVar[ReasonKind]
    REASON_KIND_EXPLORATION: _ClassVar[ReasonKind]
    REASON_KIND_SESSION_TURN: _ClassVar[ReasonKind]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_VIEW: _ClassVar[EventType]
    EVENT_TYPE_CLICK: _ClassVar[EventType]
    EVENT_TYPE_RATING: _ClassVar[EventType]
    EVENT_TYPE_PURCHASE: _ClassVar[EventType]
    EVENT_TYPE_DISMISS: _ClassVar[EventType]
EXPLORATION_POLICY_UNSPECIFIED: ExplorationPolicy
EXPLORATION_POLICY_GREEDY: ExplorationPolicy
EXPLORATION_POLICY_EPSILON: ExplorationPolicy
EXPLORATION_POLICY_SOFTMAX: ExplorationPolicy
REASON_KIND_UNSPECIFIED: ReasonKind
REASON_KIND_HISTORY_ITEM: ReasonKind
REASON_KIND_QUERY: ReasonKind
REASON_KIND_ATTRIBUTE: ReasonKind
REASON_KIND_POPULAR: ReasonKind
REASON_KIND_NEW_ITEM: ReasonKind
REASON_KIND_EXPLORATION: ReasonKind
REASON_KIND_SESSION_TURN: ReasonKind
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_VIEW: EventType
EVENT_TYPE_CLICK: EventType
EVENT_TYPE_RATING: EventType
EVENT_TYPE_PURCHASE: EventType
EVENT_TYPE_DISMISS: EventType

class RecommendRequest(_message.Message):
    __slots__ = ("user_id", "recent_item_ids", "query", "k", "exclude_item_ids", "filters", "scenario", "new_item_slots", "diversity", "exploration", "request_id", "session_id", "rating_weight")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    RECENT_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    NEW_ITEM_SLOTS_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    recent_item_ids: _containers.RepeatedScalarFieldContainer[str]
    query: str
    k: int
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    filters: _containers.RepeatedCompositeFieldContainer[_common_pb2.AttributeFilter]
    scenario: str
    new_item_slots: int
    diversity: float
    exploration: Exploration
    request_id: str
    session_id: str
    rating_weight: float
    def __init__(self, user_id: _Optional[str] = ..., recent_item_ids: _Optional[_Iterable[str]] = ..., query: _Optional[str] = ..., k: _Optional[int] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., filters: _Optional[_Iterable[_Union[_common_pb2.AttributeFilter, _Mapping]]] = ..., scenario: _Optional[str] = ..., new_item_slots: _Optional[int] = ..., diversity: _Optional[float] = ..., exploration: _Optional[_Union[Exploration, _Mapping]] = ..., request_id: _Optional[str] = ..., session_id: _Optional[str] = ..., rating_weight: _Optional[float] = ...) -> None: ...

class Exploration(_message.Message):
    __slots__ = ("policy", "epsilon", "temperature")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    policy: ExplorationPolicy
    epsilon: float
    temperature: float
    def __init__(self, policy: _Optional[_Union[ExplorationPolicy, str]] = ..., epsilon: _Optional[float] = ..., temperature: _Optional[float] = ...) -> None: ...

class Reason(_message.Message):
    __slots__ = ("kind", "item_id", "text", "weight")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    kind: ReasonKind
    item_id: str
    text: str
    weight: float
    def __init__(self, kind: _Optional[_Union[ReasonKind, str]] = ..., item_id: _Optional[str] = ..., text: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class RecommendedItem(_message.Message):
    __slots__ = ("item_id", "score", "title", "reasons", "position", "propensity", "predicted_rating")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_RATING_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    title: str
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    position: int
    propensity: float
    predicted_rating: float
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., title: _Optional[str] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., position: _Optional[int] = ..., propensity: _Optional[float] = ..., predicted_rating: _Optional[float] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "model_version", "degraded", "degraded_reason", "timings", "source", "request_id", "scenario", "policy", "refinements", "session_turn", "rating_weight")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASON_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    REFINEMENTS_FIELD_NUMBER: _ClassVar[int]
    SESSION_TURN_FIELD_NUMBER: _ClassVar[int]
    RATING_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[RecommendedItem]
    model_version: str
    degraded: bool
    degraded_reason: str
    timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.StageTiming]
    source: str
    request_id: str
    scenario: str
    policy: str
    refinements: _containers.RepeatedCompositeFieldContainer[Refinement]
    session_turn: int
    rating_weight: float
    def __init__(self, items: _Optional[_Iterable[_Union[RecommendedItem, _Mapping]]] = ..., model_version: _Optional[str] = ..., degraded: _Optional[bool] = ..., degraded_reason: _Optional[str] = ..., timings: _Optional[_Iterable[_Union[_common_pb2.StageTiming, _Mapping]]] = ..., source: _Optional[str] = ..., request_id: _Optional[str] = ..., scenario: _Optional[str] = ..., policy: _Optional[str] = ..., refinements: _Optional[_Iterable[_Union[Refinement, _Mapping]]] = ..., session_turn: _Optional[int] = ..., rating_weight: _Optional[float] = ...) -> None: ...

class Refinement(_message.Message):
    __slots__ = ("text", "key", "value")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    text: str
    key: str
    value: str
    def __init__(self, text: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class UpsertItemsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.Item]
    def __init__(self, items: _Optional[_Iterable[_Union[_common_pb2.Item, _Mapping]]] = ...) -> None: ...

class UpsertItemsResponse(_message.Message):
    __slots__ = ("upserted_count",)
    UPSERTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    upserted_count: int
    def __init__(self, upserted_count: _Optional[int] = ...) -> None: ...

class DeleteItemsRequest(_message.Message):
    __slots__ = ("item_ids",)
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteItemsResponse(_message.Message):
    __slots__ = ("deleted_count",)
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    def __init__(self, deleted_count: _Optional[int] = ...) -> None: ...

class GetItemsRequest(_message.Message):
    __slots__ = ("item_ids",)
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetItemsResponse(_message.Message):
    __slots__ = ("items", "missing_item_ids")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MISSING_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.Item]
    missing_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, items: _Optional[_Iterable[_Union[_common_pb2.Item, _Mapping]]] = ..., missing_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class FeedbackEvent(_message.Message):
    __slots__ = ("user_id", "item_id", "event_type", "value", "event_time", "scenario", "request_id", "session_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    item_id: str
    event_type: EventType
    value: float
    event_time: _timestamp_pb2.Timestamp
    scenario: str
    request_id: str
    session_id: str
    def __init__(self, user_id: _Optional[str] = ..., item_id: _Optional[str] = ..., event_type: _Optional[_Union[EventType, str]] = ..., value: _Optional[float] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., scenario: _Optional[str] = ..., request_id: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class RecordFeedbackRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[FeedbackEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[FeedbackEvent, _Mapping]]] = ...) -> None: ...

class RecordFeedbackResponse(_message.Message):
    __slots__ = ("accepted_count",)
    ACCEPTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    accepted_count: int
    def __init__(self, accepted_count: _Optional[int] = ...) -> None: ...

class GetUserHistoryRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class GetUserHistoryResponse(_message.Message):
    __slots__ = ("events", "impressions")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[FeedbackEvent]
    impressions: _containers.RepeatedCompositeFieldContainer[Impression]
    def __init__(self, events: _Optional[_Iterable[_Union[FeedbackEvent, _Mapping]]] = ..., impressions: _Optional[_Iterable[_Union[Impression, _Mapping]]] = ...) -> None: ...

class Impression(_message.Message):
    __slots__ = ("request_id", "user_id", "item_id", "position", "propensity", "policy", "model_version", "scenario", "shown_time")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    SHOWN_TIME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    item_id: str
    position: int
    propensity: float
    policy: str
    model_version: str
    scenario: str
    shown_time: _timestamp_pb2.Timestamp
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., item_id: _Optional[str] = ..., position: _Optional[int] = ..., propensity: _Optional[float] = ..., policy: _Optional[str] = ..., model_version: _Optional[str] = ..., scenario: _Optional[str] = ..., shown_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeleteUserDataRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class DeleteUserDataResponse(_message.Message):
    __slots__ = ("deleted_event_count", "deleted_impression_count", "deleted_session_count")
    DELETED_EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    DELETED_IMPRESSION_COUNT_FIELD_NUMBER: _ClassVar[int]
    DELETED_SESSION_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_event_count: int
    deleted_impression_count: int
    deleted_session_count: int
    def __init__(self, deleted_event_count: _Optional[int] = ..., deleted_impression_count: _Optional[int] = ..., deleted_session_count: _Optional[int] = ...) -> None: ...
