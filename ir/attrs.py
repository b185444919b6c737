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


def shard_properties(shard: tuple[int, int] | None) -> dict[str, IntegerAttr]:
    """`shard_dim` / `shard_parts` properties of a tensor split over chips ({} when whole)."""
    if shard is None:
        return {}
    return {"shard_dim": i64_attr(shard[0]), "shard_parts": i64_attr(shard[1])}


def read_shard(dim: IntegerAttr | None, parts: IntegerAttr | None) -> tuple[int, int] | None:
    """(dim, parts) from `shard_dim` / `shard_parts` properties, or None."""
    if dim is None or parts is None:
        return None
    return dim.value.data, parts.value.data
