"""Attribute filters: the one meaning of the contract's AttributeFilter, which every tier applies.

An item passes a filter when its attribute `key` holds at least one of the filter's values (exact,
case-sensitive strings); several filters combine with AND. An item without the key, or with no values
under it, passes no filter on that key, and no filters at all pass every item. Two filters on one key
stay two: a multi-valued item holding A and C passes {A, B} AND {B, C} without holding B, so they are
never merged. A filter without values is refused on the wire (`parse_filters`); in code it passes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from lmrec import validation as v
from lmrec.errors import InvalidArgument
from lmrec.v1 import common_pb2

Attributes = Mapping[str, Sequence[str]]


class AttributeFilter(NamedTuple):
    """A filter in canonical form: its values distinct, in the order given.

    A tuple so that code written against `(key, values)` pairs (the index's plans, the tests) unpacks it.
    """

    key: str
    values: tuple[str, ...]

    def holds(self, attributes: Attributes) -> bool:
        """Whether an item with `attributes` passes this filter."""
        return not set(attributes.get(self.key, ())).isdisjoint(self.values)

    def held(self, attributes: Attributes) -> tuple[str, ...]:
        """The values of this filter the item holds, in the filter's order (empty: it does not pass)."""
        have = set(attributes.get(self.key, ()))
        return tuple(value for value in self.values if value in have)


def attribute_filter(key: str, values: Iterable[str]) -> AttributeFilter:
    """The canonical filter of `key` and `values` (repeated values dropped); not validated."""
    return AttributeFilter(key, tuple(dict.fromkeys(values)))


def as_filters(filters: Iterable[tuple[str, Iterable[str]]]) -> tuple[AttributeFilter, ...]:
    """`filters` in canonical form; (key, values) pairs are accepted where code builds filters itself."""
    return tuple(f if isinstance(f, AttributeFilter) else attribute_filter(*f) for f in filters)


def matches(attributes: Attributes, filters: Iterable[AttributeFilter]) -> bool:
    """Whether an item with `attributes` passes every one of `filters`."""
    return all(f.holds(attributes) for f in filters)


def parse_filters(messages: Sequence[common_pb2.AttributeFilter], field: str,
                  max_count: int = v.MAX_FILTERS) -> tuple[AttributeFilter, ...]:
    """Validates the contract's filters and returns them in canonical form.

    Keys and values are ids (non-empty, at most MAX_ID_BYTES), as item attributes are at the gateway, so
    a value no item can hold is refused rather than silently matching nothing.

    Raises:
        InvalidArgument: naming `field[i].key` or `field[i].values`.
    """
    if len(messages) > max_count:
        raise InvalidArgument(field, f"{len(messages)} filters, at most {max_count} allowed")
    out = []
    for i, message in enumerate(messages):
        v.require_id(message.key, f"{field}[{i}].key")
        if not message.values:
            raise InvalidArgument(f"{field}[{i}].values", "must not be empty")
        v.check_ids(message.values, f"{field}[{i}].values", v.MAX_FILTER_VALUES)
        out.append(attribute_filter(message.key, message.values))
    return tuple(out)


def filter_messages(filters: Iterable[AttributeFilter]) -> list[common_pb2.AttributeFilter]:
    """The contract's form of canonical filters."""
    return [common_pb2.AttributeFilter(key=f.key, values=f.values) for f in filters]
