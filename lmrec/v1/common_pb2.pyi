from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AttributeValues(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class AttributeFilter(_message.Message):
    __slots__ = ("key", "values")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    key: str
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("item_id", "title", "text", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: AttributeValues
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[AttributeValues, _Mapping]] = ...) -> None: ...
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    title: str
    text: str
    attributes: _containers.MessageMap[str, AttributeValues]
    def __init__(self, item_id: _Optional[str] = ..., title: _Optional[str] = ..., text: _Optional[str] = ..., attributes: _Optional[_Mapping[str, AttributeValues]] = ...) -> None: ...

class UserContext(_message.Message):
    __slots__ = ("user_id", "history_item_ids", "query", "scenario", "history_weights", "negative_item_ids", "negative_weights", "item_ratings", "rating_weight")
    class ItemRatingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    HISTORY_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    ITEM_RATINGS_FIELD_NUMBER: _ClassVar[int]
    RATING_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    history_item_ids: _containers.RepeatedScalarFieldContainer[str]
    query: str
    scenario: str
    history_weights: _containers.RepeatedScalarFieldContainer[float]
    negative_item_ids: _containers.RepeatedScalarFieldContainer[str]
    negative_weights: _containers.RepeatedScalarFieldContainer[float]
    item_ratings: _containers.ScalarMap[str, float]
    rating_weight: float
    def __init__(self, user_id: _Optional[str] = ..., history_item_ids: _Optional[_Iterable[str]] = ..., query: _Optional[str] = ..., scenario: _Optional[str] = ..., history_weights: _Optional[_Iterable[float]] = ..., negative_item_ids: _Optional[_Iterable[str]] = ..., negative_weights: _Optional[_Iterable[float]] = ..., item_ratings: _Optional[_Mapping[str, float]] = ..., rating_weight: _Optional[float] = ...) -> None: ...

class ScoredItem(_message.Message):
    __slots__ = ("item_id", "score")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "millis")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MILLIS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    millis: float
    def __init__(self, stage: _Optional[str] = ..., millis: _Optional[float] = ...) -> None: ...
