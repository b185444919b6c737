"""The `isa` dialect: one op per machine instruction, 1:1 with the encoding.

Operand fields are properties named for what they mean; backend/emit.py maps
them onto the 32-byte encoding of backend/isa_spec.py (docs/isa.md). Memory
operands are a register and a byte offset (`*_reg`, `*_off`). `isa.symbol` is
a directive, not an instruction: it places a named tensor in HBM. Example::

    isa.symbol {name = "x", kind = "input", address = 0 : i64, shape = [8 : i64, 32 : i64], dtype = "f32"}
    isa.addi {rd = 1 : i64, rs = 0 : i64, imm = 0 : i64}
    isa.loop {count = 4 : i64}
    isa.dma_load {sram_reg = 0 : i64, sram_off = 0 : i64, hbm_reg = 1 : i64, hbm_off = 0 : i64, rows = 2 : i64,
                  cols = 32 : i64, row_stride = 32 : i64, col_stride = 1 : i64, dt_sram = "f32", dt_hbm = "f32"}
    isa.addi {rd = 1 : i64, rs = 1 : i64, imm = 256 : i64}
    isa.endloop
"""

from __future__ import annotations

from typing import ClassVar

from xdsl.dialects.builtin import ArrayAttr, FloatAttr, IntegerAttr, StringAttr
from xdsl.ir import Dialect
from xdsl.irdl import IRDLOperation, ParsePropInAttrDict, irdl_op_definition, opt_prop_def, prop_def
from xdsl.utils.exceptions import VerifyException

from tasic.ir.attrs import i64_attr, str_attr

NUM_REGS = 32
NUM_SEMAPHORES = 64
ENGINE_NAMES = ("ctrl", "dma_load", "dma_store", "mxu", "vpu", "link")
DTYPE_NAMES = ("f32", "bf16", "f16", "f8e4m3", "f8e5m2", "i32", "i64", "bool", "i8")

# field kinds: "int" i64, "reg" register index, "str" string, "dtype" dtype name,
# "engine" engine name, "f32" float immediate.
_MEM = {"reg", "int"}
INSTRUCTIONS: dict[str, dict[str, str]] = {
    "halt": {},
    "addi": {"rd": "reg", "rs": "reg", "imm": "int"},
    "loop": {"count": "int"},
    "endloop": {},
    "signal": {"engine": "engine", "sem": "int"},
    "wait": {"engine": "engine", "sem": "int"},
    "dma_load": {
        "sram_reg": "reg", "sram_off": "int", "hbm_reg": "reg", "hbm_off": "int", "rows": "int", "cols": "int",
        "row_stride": "int", "col_stride": "int", "dt_sram": "dtype", "dt_hbm": "dtype",
    },
    "dma_store": {
        "hbm_reg": "reg", "hbm_off": "int", "sram_reg": "reg", "sram_off": "int", "rows": "int", "cols": "int",
        "row_stride": "int", "col_stride": "int", "dt_hbm": "dtype", "dt_sram": "dtype",
    },
    "dma_gather": {
        "sram_reg": "reg", "sram_off": "int", "table_reg": "reg", "table_off": "int", "ids_reg": "reg",
        "ids_off": "int", "rows": "int", "cols": "int", "table_stride": "int", "dt_sram": "dtype",
        "dt_table": "dtype", "dt_ids": "dtype",
    },
    "dma_scatter": {
        "table_reg": "reg", "table_off": "int", "sram_reg": "reg", "sram_off": "int", "ids_reg": "reg",
        "ids_off": "int", "rows": "int", "cols": "int", "table_stride": "int", "dt_table": "dtype",
        "dt_sram": "dtype", "dt_ids": "dtype",
    },
    "mxu_matmul": {
        "c_reg": "reg", "c_off": "int", "a_reg": "reg", "a_off": "int", "b_reg": "reg", "b_off": "int",
        "m": "int", "n": "int", "k": "int", "accumulate": "int", "dt_c": "dtype", "dt_a": "dtype", "dt_b": "dtype",
        "batch": "int",
    },
    "vpu_unary": {
        "fn": "str", "d_reg": "reg", "d_off": "int", "a_reg": "reg", "a_off": "int", "rows": "int", "cols": "int",
        "dt_d": "dtype", "dt_a": "dtype",
    },
    "vpu_binary": {
        "fn": "str", "broadcast": "str", "d_reg": "reg", "d_off": "int", "a_reg": "reg", "a_off": "int",
        "b_reg": "reg", "b_off": "int", "rows": "int", "cols": "int", "dt_d": "dtype", "dt_a": "dtype",
        "dt_b": "dtype",
    },
    "vpu_scalar": {
        "fn": "str", "d_reg": "reg", "d_off": "int", "a_reg": "reg", "a_off": "int", "rows": "int", "cols": "int",
        "dt_d": "dtype", "dt_a": "dtype", "value": "f32",
    },
    "vpu_reduce": {
        "fn": "str", "d_reg": "reg", "d_off": "int", "a_reg": "reg", "a_off": "int", "rows": "int", "cols": "int",
        "dt_d": "dtype", "dt_a": "dtype",
    },
    "vpu_select": {
        "d_reg": "reg", "d_off": "int", "a_reg": "reg", "a_off": "int", "b_reg": "reg", "b_off": "int",
        "c_reg": "reg", "c_off": "int", "rows": "int", "cols": "int", "dt_d": "dtype", "dt_a": "dtype",
        "dt_b": "dtype",
    },
    "vpu_exp_sum": {
        "d_reg": "reg", "d_off": "int", "a_reg": "reg", "a_off": "int", "b_reg": "reg", "b_off": "int",
        "c_reg": "reg", "c_off": "int", "rows": "int", "cols": "int", "dt_d": "dtype", "dt_a": "dtype",
        "dt_b": "dtype",
    },
    "vpu_rope": {
        "d_reg": "reg", "d_off": "int", "a_reg": "reg", "a_off": "int", "b_reg": "reg", "b_off": "int",
        "rows": "int", "cols": "int", "head_dim": "int", "roped": "int", "dt_d": "dtype", "dt_a": "dtype",
        "dt_b": "dtype",
    },
    "vpu_fill": {"d_reg": "reg", "d_off": "int", "rows": "int", "cols": "int", "dt_d": "dtype", "value": "f32"},
    "vpu_causal": {
        "d_reg": "reg", "d_off": "int", "diag_reg": "reg", "diag_off": "int", "rows": "int", "cols": "int",
        "window": "int", "dt_d": "dtype", "period": "int",
    },
    "link_allreduce": {
        "d_reg": "reg", "d_off": "int", "a_reg": "reg", "a_off": "int", "rows": "int", "cols": "int",
        "chips": "int", "dt_d": "dtype", "dt_a": "dtype",
    },
    "link_send": {
        "hbm_reg": "reg", "hbm_off": "int", "sram_reg": "reg", "sram_off": "int", "rows": "int", "cols": "int",
        "row_stride": "int", "col_stride": "int", "dt_hbm": "dtype", "dt_sram": "dtype",
    },
}  # fmt: skip

_ATTR_OF_KIND = {
    "int": IntegerAttr,
    "reg": IntegerAttr,
    "str": StringAttr,
    "dtype": StringAttr,
    "engine": StringAttr,
    "f32": FloatAttr,
}


class IsaOp(IRDLOperation):
    """An instruction: properties are its fields (see INSTRUCTIONS)."""

    assembly_format = "attr-dict"
    irdl_options = (ParsePropInAttrDict(),)
    FIELDS: ClassVar[dict[str, str]] = {}

    def field(self, name: str) -> int | str | float:
        """A field's Python value."""
        attr = self.properties[name]
        if isinstance(attr, IntegerAttr | FloatAttr):
            return attr.value.data
        assert isinstance(attr, StringAttr)
        return attr.data

    def verify_(self) -> None:
        for name, kind in self.FIELDS.items():
            value = self.field(name)
            bad = (
                (kind == "reg" and not 0 <= int(value) < NUM_REGS)
                or (kind == "dtype" and value not in DTYPE_NAMES)
                or (kind == "engine" and value not in ENGINE_NAMES)
            )
            if bad:
                raise VerifyException(f"{self.name}: field {name} has invalid value {value!r}")
        if self.name in ("isa.signal", "isa.wait") and not 0 <= int(self.field("sem")) < NUM_SEMAPHORES:
            raise VerifyException(f"{self.name}: semaphore out of range")


def _instruction_class(mnemonic: str, fields: dict[str, str]) -> type[IsaOp]:
    namespace: dict[str, object] = {
        "name": f"isa.{mnemonic}",
        "FIELDS": fields,
        "__annotations__": {"FIELDS": ClassVar[dict[str, str]]},
        "__doc__": f"The `{mnemonic}` instruction (docs/isa.md). Fields: {', '.join(fields) or 'none'}.",
        "loc": opt_prop_def(StringAttr),
    }
    for field_name, kind in fields.items():
        namespace[field_name] = prop_def(_ATTR_OF_KIND[kind])
    class_name = "".join(part.capitalize() for part in mnemonic.split("_")) + "Op"
    return irdl_op_definition(type(class_name, (IsaOp,), namespace))


INSTRUCTION_OPS: dict[str, type[IsaOp]] = {m: _instruction_class(m, f) for m, f in INSTRUCTIONS.items()}


@irdl_op_definition
class SymbolOp(IRDLOperation):
    """Directive: a named tensor at an HBM byte address.

    Weights name their weight-store entry in `source`; `transpose = 1` stores it transposed.
    In a multi-entry program an input or output names its `entry` and the `user_name` callers use.
    `shard_dim` / `shard_parts` (tensor parallelism): each chip holds its part of the full tensor.

    isa.symbol {name = "wte", kind = "weight", address = 0 : i64, shape = [100 : i64, 32 : i64], dtype = "f32"}
    """

    name = "isa.symbol"
    assembly_format = "attr-dict"
    irdl_options = (ParsePropInAttrDict(),)
    sym = prop_def(StringAttr, prop_name="name")
    kind = prop_def(StringAttr)
    address = prop_def(IntegerAttr)
    shape = prop_def(ArrayAttr)
    dtype = prop_def(StringAttr)
    source = opt_prop_def(StringAttr)
    transpose = opt_prop_def(IntegerAttr)
    entry = opt_prop_def(StringAttr)
    user_name = opt_prop_def(StringAttr)
    shard_dim = opt_prop_def(IntegerAttr)
    shard_parts = opt_prop_def(IntegerAttr)


@irdl_op_definition
class EntryOp(IRDLOperation):
    """Directive: the instructions that follow, up to halt, are the entry point `name`.

    isa.entry {name = "decode"}
    """

    name = "isa.entry"
    assembly_format = "attr-dict"
    irdl_options = (ParsePropInAttrDict(),)
    sym = prop_def(StringAttr, prop_name="name")


def create_instruction(mnemonic: str, loc: str | None = None, **values: int | str | float) -> IsaOp:
    """Build an isa op from Python field values; every field must be given."""
    from xdsl.dialects.builtin import f32

    cls = INSTRUCTION_OPS[mnemonic]
    props = {}
    for name, kind in cls.FIELDS.items():
        value = values.pop(name)
        if kind in ("int", "reg"):
            props[name] = i64_attr(int(value))
        elif kind == "f32":
            props[name] = FloatAttr(float(value), f32)
        else:
            props[name] = str_attr(str(value))
    if values:
        raise ValueError(f"isa.{mnemonic} has no fields {sorted(values)}")
    if loc:
        props["loc"] = str_attr(loc)
    return cls.create(properties=props)


Isa = Dialect("isa", [*INSTRUCTION_OPS.values(), SymbolOp, EntryOp])
