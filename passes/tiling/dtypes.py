"""Element types: xDSL types <-> ISA dtype names, and their sizes."""

from __future__ import annotations

from xdsl.dialects.builtin import (
    BFloat16Type,
    Float8E4M3FNType,
    Float8E5M2Type,
    Float16Type,
    Float32Type,
    IntegerType,
    bf16,
    f16,
    f32,
    i1,
    i8,
    i32,
    i64,
)
from xdsl.ir import Attribute

_BY_NAME: dict[str, Attribute] = {
    "f32": f32,
    "bf16": bf16,
    "f16": f16,
    "f8e4m3": Float8E4M3FNType(),
    "f8e5m2": Float8E5M2Type(),
    "i32": i32,
    "i64": i64,
    "bool": i1,
    "i8": i8,
}
BYTES = {"f32": 4, "bf16": 2, "f16": 2, "f8e4m3": 1, "f8e5m2": 1, "i32": 4, "i64": 8, "bool": 1, "i8": 1}
FLOAT_NAMES = ("f32", "bf16", "f16", "f8e4m3", "f8e5m2")


def dtype_name(element_type: Attribute) -> str:
    """The ISA dtype name of an xDSL element type (f64 is stored as f32)."""
    if isinstance(element_type, Float32Type | BFloat16Type | Float16Type | Float8E4M3FNType | Float8E5M2Type):
        for name, typ in _BY_NAME.items():
            if typ == element_type:
                return name
    if isinstance(element_type, IntegerType):
        width = element_type.width.data
        return {1: "bool", 8: "i8", 32: "i32", 64: "i64"}.get(width, "i64")
    return "f32"


def element_type(name: str) -> Attribute:
    """The xDSL element type of an ISA dtype name."""
    return _BY_NAME[name]


def element_bytes(typ: Attribute) -> int:
    """Bytes per element of an xDSL element type."""
    return BYTES[dtype_name(typ)]
