"""Loads a dataset's catalogue and interaction histories into a running gateway through its public API."""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.timestamp_pb2 import Timestamp

from lmrec.catalog import item_message
from lmrec_data.datasets import Dataset
from lmrec.v1 import gateway_service_pb2 as gw, gateway_service_pb2_grpc as gw_grpc

ITEM_BATCH = 256
EVENT_BATCH = 5000


def event_message(x) -> gw.FeedbackEvent:
    event = gw.FeedbackEvent(
        user_id=x.user_id, item_id=x.item_id,
        event_type=gw.EVENT_TYPE_RATING if x.rating is not None else gw.EVENT_TYPE_VIEW,
        value=x.rating or 0.0, event_time=Timestamp(seconds=x.timestamp), scenario=x.scenario or "")
    return event


def load_catalog(stub: gw_grpc.GatewayServiceStub, dataset: Dataset, with_histories: bool = True,
                 progress: Callable[[str], None] = lambda _: None, timeout_s: float = 120.0) -> tuple[int, int]:
    """Upserts every item, then records every interaction; returns (items, events) written."""
    for start in range(0, len(dataset.items), ITEM_BATCH):
        batch = dataset.items[start:start + ITEM_BATCH]
        stub.UpsertItems(gw.UpsertItemsRequest(items=[item_message(i) for i in batch]), timeout=timeout_s)
        progress(f"items {min(start + ITEM_BATCH, len(dataset.items))}/{len(dataset.items)}")
    events = dataset.interactions if with_histories else []
    for start in range(0, len(events), EVENT_BATCH):
        batch = events[start:start + EVENT_BATCH]
        stub.RecordFeedback(gw.RecordFeedbackRequest(events=[event_message(x) for x in batch]), timeout=timeout_s)
        progress(f"events {min(start + EVENT_BATCH, len(events))}/{len(events)}")
    return len(dataset.items), len(events)
