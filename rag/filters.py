"""Metadata filters: one small dialect (Pinecone's) for every vector store.

A filter is a mapping from a metadata field to a value (equality) or to an operator mapping::

    {"kind": "SPEC", "date": {"$gte": 20240101, "$lte": 20241231}, "vin": {"$in": [...]}}

Top-level fields are combined with AND. Dates are integers ``YYYYMMDD`` so ranges work in every
backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

METADATA_FIELDS = {"kind": str, "source": str, "part": str, "vin": str, "date": int}
_COMPARE = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_LISTS = {"$in": "IN", "$nin": "NOT IN"}

Filter = Mapping[str, Any]


class FilterError(ValueError):
    """A filter names an unknown field or operator, or has a value of the wrong type."""


def normalise(filter: Filter | None) -> dict[str, dict[str, Any]]:
    """Validate a filter and spell every condition as ``{field: {op: value}}``.

    >>> normalise({"kind": "SPEC", "date": {"$gte": 20240101}})
    {'kind': {'$eq': 'SPEC'}, 'date': {'$gte': 20240101}}
    """
    result: dict[str, dict[str, Any]] = {}
    for field, condition in (filter or {}).items():
        if field not in METADATA_FIELDS:
            raise FilterError(
                f"unknown filter field {field!r}; use one of {', '.join(METADATA_FIELDS)}"
            )
        ops = condition if isinstance(condition, Mapping) else {"$eq": condition}
        expected = METADATA_FIELDS[field]
        for op, value in ops.items():
            if op not in _COMPARE and op not in _LISTS:
                raise FilterError(
                    f"unknown operator {op!r} on {field!r}; use {', '.join([*_COMPARE, *_LISTS])}"
                )
            values = value if op in _LISTS else [value]
            if op in _LISTS and not isinstance(value, list | tuple):
                raise FilterError(f"{field} {op} needs a list")
            if not all(isinstance(v, expected) and not isinstance(v, bool) for v in values):
                raise FilterError(f"{field} {op} needs {expected.__name__} values, got {value!r}")
        result[field] = dict(ops)
    return result


def to_sql(filter: Filter | None) -> str | None:
    """A SQL ``WHERE`` clause for LanceDB (None when there is nothing to filter).

    >>> to_sql({"kind": {"$in": ["SPEC", "WIRING"]}, "date": {"$lt": 20250101}})
    "kind IN ('SPEC', 'WIRING') AND date < 20250101"
    """
    clauses = []
    for field, ops in normalise(filter).items():
        for op, value in ops.items():
            if op in _LISTS:
                if not value:  # IN () is invalid SQL: an empty $in matches nothing
                    clauses.append("FALSE" if op == "$in" else "TRUE")
                    continue
                clause = f"{field} {_LISTS[op]} ({', '.join(_literal(v) for v in value)})"
                # A record without the field is "not in" any list (as in Pinecone).
                clauses.append(f"({clause} OR {field} IS NULL)" if op == "$nin" else clause)
            elif op == "$ne":
                clauses.append(f"({field} != {_literal(value)} OR {field} IS NULL)")
            else:
                clauses.append(f"{field} {_COMPARE[op]} {_literal(value)}")
    return " AND ".join(clauses) or None


def matches(metadata: Mapping[str, Any], filter: Filter | None) -> bool:
    """Whether a record's metadata passes the filter (used by in-memory stores and tests)."""
    for field, ops in normalise(filter).items():
        have = metadata.get(field)
        for op, value in ops.items():
            if op == "$in" and have not in value:
                return False
            if op == "$nin" and have in value:
                return False
            if op in _COMPARE and not _compare(have, op, value):
                return False
    return True


def _compare(have: Any, op: str, value: Any) -> bool:
    if op == "$eq":
        return have == value
    if op == "$ne":
        return have != value
    if have is None:
        return False
    return {"$gt": have > value, "$gte": have >= value, "$lt": have < value, "$lte": have <= value}[
        op
    ]


def _literal(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"
