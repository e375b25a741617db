from lmrec.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EncodeInput(_message.Message):
    __slots__ = ("text", "item_id")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    text: str
    item_id: str
    def __init__(self, text: _Optional[str] = ..., item_id: _Optional[str] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("inputs",)
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[EncodeInput]
    def __init__(self, inputs: _Optional[_Iterable[_Union[EncodeInput, _Mapping]]] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("vectors", "model_version")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[Vector]
    model_version: str
    def __init__(self, vectors: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class EncodeContextRequest(_message.Message):
    __slots__ = ("context",)
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.UserContext
    def __init__(self, context: _Optional[_Union[_common_pb2.UserContext, _Mapping]] = ...) -> None: ...

class EncodeContextResponse(_message.Message):
    __slots__ = ("vector", "model_version", "unknown_history_item_ids")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_HISTORY_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    vector: _containers.RepeatedScalarFieldContainer[float]
    model_version: str
    unknown_history_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, vector: _Optional[_Iterable[float]] = ..., model_version: _Optional[str] = ..., unknown_history_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RankRequest(_message.Message):
    __slots__ = ("context", "candidate_item_ids", "explain", "vectors_for_top")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FOR_TOP_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.UserContext
    candidate_item_ids: _containers.RepeatedScalarFieldContainer[str]
    explain: bool
    vectors_for_top: int
    def __init__(self, context: _Optional[_Union[_common_pb2.UserContext, _Mapping]] = ..., candidate_item_ids: _Optional[_Iterable[str]] = ..., explain: _Optional[bool] = ..., vectors_for_top: _Optional[int] = ...) -> None: ...

class Attribution(_message.Message):
    __slots__ = ("history_item_id", "history_weight", "query_weight")
    HISTORY_ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    QUERY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    history_item_id: str
    history_weight: float
    query_weight: float
    def __init__(self, history_item_id: _Optional[str] = ..., history_weight: _Optional[float] = ..., query_weight: _Optional[float] = ...) -> None: ...

class ItemVector(_message.Message):
    __slots__ = ("item_id", "values")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, item_id: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("scores", "unknown_item_ids", "model_version", "text_only_item_ids", "attributions", "top_vectors", "predicted_ratings")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TEXT_ONLY_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    TOP_VECTORS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_RATINGS_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    text_only_item_ids: _containers.RepeatedScalarFieldContainer[str]
    attributions: _containers.RepeatedCompositeFieldContainer[Attribution]
    top_vectors: _containers.RepeatedCompositeFieldContainer[ItemVector]
    predicted_ratings: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, scores: _Optional[_Iterable[float]] = ..., unknown_item_ids: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ..., text_only_item_ids: _Optional[_Iterable[str]] = ..., attributions: _Optional[_Iterable[_Union[Attribution, _Mapping]]] = ..., top_vectors: _Optional[_Iterable[_Union[ItemVector, _Mapping]]] = ..., predicted_ratings: _Optional[_Iterable[float]] = ...) -> None: ...

class ForgetItemsRequest(_message.Message):
    __slots__ = ("item_ids",)
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ForgetItemsResponse(_message.Message):
    __slots__ = ("forgotten_count",)
    FORGOTTEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    forgotten_count: int
    def __init__(self, forgotten_count: _Optional[int] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model_version", "encoder_name", "ranker_kind", "dimension", "precision", "execution_provider", "known_item_count", "item_precision", "rating_head")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENCODER_NAME_FIELD_NUMBER: _ClassVar[int]
    RANKER_KIND_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    KNOWN_ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    ITEM_PRECISION_FIELD_NUMBER: _ClassVar[int]
    RATING_HEAD_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    encoder_name: str
    ranker_kind: str
    dimension: int
    precision: str
    execution_provider: str
    known_item_count: int
    item_precision: str
    rating_head: bool
    def __init__(self, model_version: _Optional[str] = ..., encoder_name: _Optional[str] = ..., ranker_kind: _Optional[str] = ..., dimension: _Optional[int] = ..., precision: _Optional[str] = ..., execution_provider: _Optional[str] = ..., known_item_count: _Optional[int] = ..., item_precision: _Optional[str] = ..., rating_head: _Optional[bool] = ...) -> None: ...
