"""LlamaIndex ``MetadataFilters`` as a Chroma ``where`` filter.

Chroma compares metadata with ``$eq``, ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$in``,
``$nin`` and, for list-valued metadata, ``$contains``; conditions combine with ``$and`` / ``$or``.
LlamaIndex operators without a Chroma equivalent (``text_match``, ``is_empty``, the ``not``
condition) raise ``ValueError`` rather than being dropped, so a filter never silently widens.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

__all__ = ["combine_where", "metadata_filters_to_where"]

logger = logging.getLogger(__name__)

_COMPARISONS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
    FilterOperator.CONTAINS: "$contains",
}
# Any / all of the values in a list-valued metadata field: one $contains per value.
_LIST_MATCHES = {FilterOperator.ANY: "$or", FilterOperator.ALL: "$and"}
_CONDITIONS = {FilterCondition.AND: "$and", FilterCondition.OR: "$or"}


def _join(op: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    # Chroma wants at least two clauses under $and / $or.
    return parts[0] if len(parts) == 1 else {op: parts}


def _one(f: MetadataFilter) -> dict[str, Any]:
    op = FilterOperator(f.operator)
    if op in (FilterOperator.IN, FilterOperator.NIN, *_LIST_MATCHES) and not isinstance(
        f.value, list
    ):
        raise ValueError(f"filter on {f.key!r}: operator {op.value!r} needs a list of values")
    if op in _LIST_MATCHES:
        if not f.value:
            raise ValueError(f"filter on {f.key!r}: operator {op.value!r} needs values")
        return _join(_LIST_MATCHES[op], [{f.key: {"$contains": v}} for v in f.value])
    if op not in _COMPARISONS:
        raise ValueError(
            f"filter on {f.key!r}: Chroma has no metadata operator for {op.value!r}; supported: "
            f"{', '.join(o.value for o in (*_COMPARISONS, *_LIST_MATCHES))}"
        )
    if f.value is None:
        raise ValueError(f"filter on {f.key!r}: Chroma cannot compare metadata with None")
    return {f.key: {_COMPARISONS[op]: f.value}}


def metadata_filters_to_where(filters: MetadataFilters) -> dict[str, Any] | None:
    """Translate LlamaIndex metadata filters into a Chroma ``where`` dict.

    Parameters
    ----------
    filters : MetadataFilters
        Filters, possibly nested (a ``MetadataFilters`` inside ``filters``), combined by their
        ``condition`` (``and``, the default, or ``or``).

    Returns
    -------
    dict or None
        The ``where`` dict; ``None`` for no filter at all.

    Raises
    ------
    ValueError
        For an operator or condition Chroma cannot express (``text_match``,
        ``text_match_insensitive``, ``is_empty``, ``not``), a ``None`` value, or a list
        operator (``in``, ``nin``, ``any``, ``all``) without a list.

    Examples
    --------
    >>> from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters
    >>> metadata_filters_to_where(MetadataFilters(filters=[
    ...     MetadataFilter(key="topic", value="food"),
    ...     MetadataFilter(key="year", value=2020, operator=">="),
    ... ]))
    {'$and': [{'topic': {'$eq': 'food'}}, {'year': {'$gte': 2020}}]}
    """
    if not isinstance(filters, MetadataFilters):
        raise ValueError(
            f"filters must be llama_index MetadataFilters, got {type(filters).__name__}: for a "
            "raw Chroma filter use where="
        )
    condition = FilterCondition(filters.condition or FilterCondition.AND)
    if condition not in _CONDITIONS:
        raise ValueError(
            f"Chroma has no {condition.value!r} condition for metadata filters; use 'and' or "
            "'or' (and operators such as '!=' or 'nin' for negation)"
        )
    parts = []
    for f in filters.filters:
        part = metadata_filters_to_where(f) if isinstance(f, MetadataFilters) else _one(f)
        if part:
            parts.append(part)
    if not parts:
        return None
    return _join(_CONDITIONS[condition], parts)


def combine_where(
    where: Mapping[str, Any] | None, filters: MetadataFilters | None
) -> dict[str, Any] | None:
    """One Chroma ``where`` requiring both a raw ``where`` dict and LlamaIndex ``filters``.

    Parameters
    ----------
    where : dict, optional
    filters : MetadataFilters, optional

    Returns
    -------
    dict or None
    """
    translated = metadata_filters_to_where(filters) if filters is not None else None
    parts = [dict(w) for w in (where, translated) if w]
    return _join("$and", parts) if parts else None
