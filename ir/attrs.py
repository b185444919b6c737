"""Cached builtin attributes: xDSL verifies every attribute it builds, so reuse them."""

from __future__ import annotations

from functools import lru_cache

from xdsl.dialects.builtin import IntegerAttr, StringAttr, i64


@lru_cache(maxsize=65536)
def i64_attr(value: int) -> IntegerAttr:
    """The i64 IntegerAttr of a value (attributes are immutable, so shared)."""
    return IntegerAttr(value, i64)


@lru_cache(maxsize=4096)
def str_attr(value: str) -> StringAttr:
    """The StringAttr of a value."""
    return StringAttr(value)
