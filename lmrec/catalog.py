"""The catalogue item every tier shares, and its form in the contract."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmrec.v1 import common_pb2


@dataclass(frozen=True)
class CatalogItem:
    item_id: str
    title: str
    text: str
    attributes: dict[str, list[str]] = field(default_factory=dict)


def attribute_values(attributes: dict[str, list[str]]) -> dict[str, common_pb2.AttributeValues]:
    return {k: common_pb2.AttributeValues(values=v) for k, v in attributes.items()}


def item_message(item) -> common_pb2.Item:
    """The contract's Item for a CatalogItem."""
    return common_pb2.Item(item_id=item.item_id, title=item.title, text=item.text,
                           attributes=attribute_values(item.attributes))
