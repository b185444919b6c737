"""The `tile` dialect: explicit HBM and SRAM buffers, DMA, engine ops, rolled loops.

Buffers are memrefs in memory space "hbm" or "sram". SRAM tiles are dense and
row-major. An HBM access names a 2-D window of a buffer by an element
`offset`, a `row_stride` and a `col_stride`, plus `loop_strides`: how far the
window moves per iteration of each enclosing `tile.loop`, outermost first.
Loops stay rolled: a loop op holds one copy of its body. Example::

    tile.kernel "fc:linear" {
      %a = tile.sram {offset = -1 : i64} : memref<16x32xf32, "sram">
      tile.loop 4 {
        tile.dma_load %x, %a {rows = 16 : i64, cols = 32 : i64, offset = 0 : i64,
            row_stride = 32 : i64, col_stride = 1 : i64, loop_strides = [512 : i64]}
            : memref<64x32xf32, "hbm">, memref<16x32xf32, "sram">
      }
    }
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from xdsl.dialects.builtin import (
    ArrayAttr,
    FloatAttr,
    IntegerAttr,
    MemRefType,
    NoneAttr,
    StringAttr,
    f32,
    f64,
    i64,
)
from xdsl.ir import Attribute, Block, Dialect, Operation, Region, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
)
from xdsl.traits import NoTerminator
from xdsl.utils.exceptions import VerifyException

from tasic.ir.attrs import i64_attr, read_shard, shard_properties, str_attr

HBM = StringAttr("hbm")
SRAM = StringAttr("sram")
HBM_KINDS = ("input", "output", "weight", "kv", "temp")


def memref(shape: Sequence[int], element_type: Attribute, space: StringAttr) -> MemRefType:
    """A memref in one of the two memory spaces."""
    return _memref(tuple(shape), element_type, space)


@lru_cache(maxsize=16384)
def _memref(shape: tuple[int, ...], element_type: Attribute, space: StringAttr) -> MemRefType:
    """Types are immutable and xDSL verifies each one it builds: build each once."""
    return MemRefType(element_type, list(shape), NoneAttr(), space)


def ints(values: Sequence[int]) -> ArrayAttr:
    """An array attribute of i64."""
    return ArrayAttr([i64_attr(int(v)) for v in values])


def int_list(attr: ArrayAttr) -> list[int]:
    """Python ints of an array attribute of integers."""
    return [a.value.data for a in attr.data]


def _in_space(value: SSAValue, space: StringAttr) -> bool:
    return isinstance(value.type, MemRefType) and value.type.memory_space == space


class TileOp(IRDLOperation):
    """Common format and checks of tile ops."""

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "operands attr-dict `:` type(operands)"

    def _require(self, condition: bool, message: str) -> None:
        if not condition:
            raise VerifyException(f"{self.name}: {message}")

    def int_prop(self, name: str) -> int:
        """An integer property by name."""
        attr = self.properties[name]
        assert isinstance(attr, IntegerAttr)
        return attr.value.data


def _props(**values: int | Sequence[int]) -> dict[str, Attribute]:
    return {k: ints(v) if isinstance(v, list | tuple) else i64_attr(int(v)) for k, v in values.items()}


@irdl_op_definition
class HbmBufferOp(TileOp):
    """A named HBM buffer: a model input or output, a weight, KV-cache state, or a temporary.

    %w = tile.hbm {name = "fc.weight", kind = "weight", transpose = true} : memref<32x64xf32, "hbm">

    `transpose` (weights only) stores the named 2-D weight transposed. `shard_dim` and `shard_parts`
    (tensor parallelism) say that each chip holds its part of the full tensor along that dim
    (of the stored, untransposed tensor).
    """

    name = "tile.hbm"
    assembly_format = "attr-dict `:` type($result)"
    sym = prop_def(StringAttr, prop_name="name")
    kind = prop_def(StringAttr)
    transpose = opt_prop_def(IntegerAttr)
    shard_dim = opt_prop_def(IntegerAttr)
    shard_parts = opt_prop_def(IntegerAttr)
    result = result_def(MemRefType)

    def __init__(
        self, name: str, kind: str, typ: MemRefType, transpose: bool = False, shard: tuple[int, int] | None = None
    ):
        props: dict[str, Attribute] = {"name": StringAttr(name), "kind": StringAttr(kind)}
        if transpose:
            props["transpose"] = IntegerAttr(1, i64)
        props |= shard_properties(shard)
        super().__init__(properties=props, result_types=[typ])

    @property
    def shard(self) -> tuple[int, int] | None:
        """(dim, parts) of a buffer split over chips, else None."""
        return read_shard(self.shard_dim, self.shard_parts)

    def verify_(self) -> None:
        self._require(self.kind.data in HBM_KINDS, f"kind must be one of {HBM_KINDS}")
        self._require(self.result.type.memory_space == HBM, "must be in the hbm space")


@irdl_op_definition
class SramBufferOp(TileOp):
    """A dense SRAM tile; plan-sram sets its byte `offset` (-1 = not placed).

    %t = tile.sram {offset = 0 : i64} : memref<16x64xf32, "sram">
    """

    name = "tile.sram"
    assembly_format = "attr-dict `:` type($result)"
    offset = prop_def(IntegerAttr)
    result = result_def(MemRefType)

    def __init__(self, shape: Sequence[int], element_type: Attribute):
        super().__init__(properties=_props(offset=-1), result_types=[memref(shape, element_type, SRAM)])

    def verify_(self) -> None:
        self._require(self.result.type.memory_space == SRAM, "must be in the sram space")


@irdl_op_definition
class KernelOp(TileOp):
    """One lowered graph op: its SRAM buffers, loops and engine ops.

    tile.kernel "encoder.layer.0:softmax" { ... }
    """

    name = "tile.kernel"
    assembly_format = "$loc attr-dict-with-keyword $body"
    loc = prop_def(StringAttr)
    body = region_def("single_block")
    traits = traits_def(NoTerminator())

    def __init__(self, loc: str):
        super().__init__(properties={"loc": StringAttr(loc)}, regions=[Region(Block())])


@irdl_op_definition
class LoopOp(TileOp):
    """Repeat the body `count` times; accesses inside advance by their loop_strides.

    tile.loop 8 { ... }
    """

    name = "tile.loop"
    assembly_format = "$count attr-dict-with-keyword $body"
    count = prop_def(IntegerAttr)
    body = region_def("single_block")
    traits = traits_def(NoTerminator())

    def __init__(self, count: int):
        super().__init__(properties=_props(count=count), regions=[Region(Block())])

    def verify_(self) -> None:
        self._require(self.count.value.data >= 1, "count must be >= 1")


def enclosing_loops(op: Operation) -> list[LoopOp]:
    """The tile.loop ops around `op` in its kernel, outermost first (the order of its loop strides).

    In `tile.loop 4 { tile.loop 2 { %x } }`, %x's loops are [the loop of 4, the loop of 2]."""
    loops = []
    parent = op.parent_op()
    while parent is not None and not isinstance(parent, KernelOp):
        if isinstance(parent, LoopOp):
            loops.append(parent)
        parent = parent.parent_op()
    return loops[::-1]


def loop_depth(op: IRDLOperation) -> int:
    """How many tile.loop ops enclose `op`."""
    depth = 0
    parent = op.parent_op()
    while parent is not None and not isinstance(parent, KernelOp):
        depth += isinstance(parent, LoopOp)
        parent = parent.parent_op()
    return depth


class _HbmAccessOp(TileOp):
    """An op with one strided 2-D HBM window (offset, strides, loop_strides).

    The SRAM side starts `sram_offset` elements into the tile and, with `sram_loop_strides`, moves
    that many elements per iteration of each enclosing loop (filling a tile piece by piece).
    """

    rows = prop_def(IntegerAttr)
    cols = prop_def(IntegerAttr)
    offset = prop_def(IntegerAttr)
    row_stride = prop_def(IntegerAttr)
    col_stride = prop_def(IntegerAttr)
    loop_strides = prop_def(ArrayAttr)
    sram_offset = prop_def(IntegerAttr)
    sram_loop_strides = opt_prop_def(ArrayAttr)

    def verify_(self) -> None:
        self._require(len(self.loop_strides.data) == loop_depth(self), "one loop stride per enclosing tile.loop")
        if self.sram_loop_strides is not None:
            self._require(len(self.sram_loop_strides.data) == loop_depth(self), "one SRAM stride per tile.loop")
        self._require(self.int_prop("rows") >= 1 and self.int_prop("cols") >= 1, "empty window")


def _window_props(
    rows: int,
    cols: int,
    offset: int,
    strides: tuple[int, int],
    loop_strides: Sequence[int],
    sram_offset: int,
    sram_loop_strides: Sequence[int] | None = None,
) -> dict[str, Attribute]:
    props = _props(
        rows=rows,
        cols=cols,
        offset=offset,
        row_stride=strides[0],
        col_stride=strides[1],
        loop_strides=list(loop_strides),
        sram_offset=sram_offset,
    )
    if sram_loop_strides is not None and any(sram_loop_strides):
        props |= _props(sram_loop_strides=list(sram_loop_strides))
    return props


@irdl_op_definition
class DmaLoadOp(_HbmAccessOp):
    """Load an HBM window into an SRAM tile (converting dtypes).

    tile.dma_load %hbm, %tile {rows = 4 : i64, cols = 8 : i64, offset = 0 : i64, row_stride = 8 : i64,
        col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<..., "hbm">, memref<..., "sram">
    """

    name = "tile.dma_load"
    source = operand_def(MemRefType)
    dest = operand_def(MemRefType)

    def __init__(
        self,
        source: SSAValue,
        dest: SSAValue,
        rows: int,
        cols: int,
        offset: int,
        strides: tuple[int, int],
        loop_strides: Sequence[int],
        sram_offset: int = 0,
        sram_loop_strides: Sequence[int] | None = None,
    ):
        props = _window_props(rows, cols, offset, strides, loop_strides, sram_offset, sram_loop_strides)
        super().__init__(operands=[source, dest], properties=props)

    def verify_(self) -> None:
        super().verify_()
        self._require(_in_space(self.source, HBM) and _in_space(self.dest, SRAM), "loads hbm -> sram")


class StoreOp(_HbmAccessOp):
    """An SRAM tile written into an HBM window (converting dtypes): DmaStoreOp or LinkSendOp."""

    source = operand_def(MemRefType)
    dest = operand_def(MemRefType)

    def __init__(
        self,
        source: SSAValue,
        dest: SSAValue,
        rows: int,
        cols: int,
        offset: int,
        strides: tuple[int, int],
        loop_strides: Sequence[int],
        sram_offset: int = 0,
        sram_loop_strides: Sequence[int] | None = None,
    ):
        props = _window_props(rows, cols, offset, strides, loop_strides, sram_offset, sram_loop_strides)
        super().__init__(operands=[source, dest], properties=props)

    def verify_(self) -> None:
        super().verify_()
        self._require(_in_space(self.source, SRAM) and _in_space(self.dest, HBM), "stores sram -> hbm")


@irdl_op_definition
class DmaStoreOp(StoreOp):
    """Store an SRAM tile into an HBM window of this chip (DMA engine).

    tile.dma_store %tile, %hbm {rows = 4 : i64, ...} : memref<..., "sram">, memref<..., "hbm">
    """

    name = "tile.dma_store"


@irdl_op_definition
class LinkSendOp(StoreOp):
    """Send an SRAM tile over the links into an HBM window of the next pipeline stage's chip.

    A stage compiled alone holds that window as an output buffer of its own (the next chip's input).

    tile.link_send %tile, %hbm {rows = 4 : i64, ...} : memref<..., "sram">, memref<..., "hbm">
    """

    name = "tile.link_send"


class _IndexedRowsOp(_HbmAccessOp):
    """DMA of table rows picked by integer ids held in HBM.

    The window properties address the ids (`rows` ids at `offset`, advancing
    by `loop_strides`); `table_offset`/`table_loop_strides` address the first
    column of the table, whose rows are `row_stride` elements apart.
    """

    ids = operand_def(MemRefType)
    table_offset = prop_def(IntegerAttr)
    table_loop_strides = prop_def(ArrayAttr)

    @staticmethod
    def indexed_props(
        rows: int,
        cols: int,
        ids_access: tuple[int, Sequence[int]],
        table_access: tuple[int, Sequence[int]],
        stride: int,
        sram_access: tuple[int, Sequence[int]] = (0, ()),
    ) -> dict[str, Attribute]:
        """Properties of an indexed-rows DMA (`sram_access`: element offset and loop strides in the tile)."""
        props = _window_props(rows, cols, ids_access[0], (stride, 1), ids_access[1], *sram_access)
        return props | _props(table_offset=table_access[0], table_loop_strides=list(table_access[1]))


@irdl_op_definition
class DmaGatherOp(_IndexedRowsOp):
    """Gather table rows picked by integer ids into an SRAM tile (embeddings).

    tile.dma_gather %table, %ids, %tile {rows = 8 : i64, cols = 16 : i64, ...} : memref<...>, memref<...>, memref<...>
    """

    name = "tile.dma_gather"
    table = operand_def(MemRefType)
    ids = operand_def(MemRefType)
    dest = operand_def(MemRefType)

    def __init__(
        self,
        table: SSAValue,
        ids: SSAValue,
        dest: SSAValue,
        rows: int,
        cols: int,
        ids_access: tuple[int, Sequence[int]],
        table_access: tuple[int, Sequence[int]],
        table_row_stride: int,
    ):
        props = self.indexed_props(rows, cols, ids_access, table_access, table_row_stride)
        super().__init__(operands=[table, ids, dest], properties=props)


@irdl_op_definition
class DmaScatterOp(_IndexedRowsOp):
    """Write SRAM tile rows into table rows picked by integer ids (KV-cache writes).

    tile.dma_scatter %tile, %ids, %table {rows = 4 : i64, cols = 16 : i64, ...} : memref<...>, memref<...>, memref<...>
    """

    name = "tile.dma_scatter"
    source = operand_def(MemRefType)
    ids = operand_def(MemRefType)
    table = operand_def(MemRefType)

    def __init__(
        self,
        source: SSAValue,
        ids: SSAValue,
        table: SSAValue,
        rows: int,
        cols: int,
        ids_access: tuple[int, Sequence[int]],
        table_access: tuple[int, Sequence[int]],
        table_row_stride: int,
        sram_access: tuple[int, Sequence[int]] = (0, ()),
    ):
        props = self.indexed_props(rows, cols, ids_access, table_access, table_row_stride, sram_access)
        super().__init__(operands=[source, ids, table], properties=props)


@irdl_op_definition
class MatmulOp(TileOp):
    """C[m, n] (+)= A[m, k] @ B[k, n] on the matrix engine, fp32 accumulate.

    With `batch` > 1, C_i = A_i @ B_i for `batch` consecutive dense [m, k], [k, n], [m, n] tiles.

    tile.matmul %a, %b, %c {m = 16 : i64, n = 16 : i64, k = 32 : i64, accumulate = 1 : i64} : memref<...>, ...
    """

    name = "tile.matmul"
    lhs = operand_def(MemRefType)
    rhs = operand_def(MemRefType)
    acc = operand_def(MemRefType)
    m = prop_def(IntegerAttr)
    n = prop_def(IntegerAttr)
    k = prop_def(IntegerAttr)
    accumulate = prop_def(IntegerAttr)
    batch = opt_prop_def(IntegerAttr)

    def __init__(
        self, lhs: SSAValue, rhs: SSAValue, acc: SSAValue, m: int, n: int, k: int, accumulate: bool, batch: int = 1
    ):
        props = _props(m=m, n=n, k=k, accumulate=int(accumulate))
        if batch > 1:
            props |= _props(batch=batch)
        super().__init__(operands=[lhs, rhs, acc], properties=props)

    @property
    def batch_count(self) -> int:
        """Products in this op (1 unless batched)."""
        return self.batch.value.data if self.batch is not None else 1


class _VectorOp(TileOp):
    """A VPU op over a rows x cols tile."""

    rows = prop_def(IntegerAttr)
    cols = prop_def(IntegerAttr)


@irdl_op_definition
class UnaryOp(_VectorOp):
    """dest = fn(source), elementwise.

    tile.unary %x, %y {fn = "exp", rows = 4 : i64, cols = 8 : i64} : memref<...>, memref<...>
    """

    name = "tile.unary"
    fn = prop_def(StringAttr)
    source = operand_def(MemRefType)
    dest = operand_def(MemRefType)

    def __init__(self, fn: str, source: SSAValue, dest: SSAValue, rows: int, cols: int):
        props = {"fn": StringAttr(fn)} | _props(rows=rows, cols=cols)
        super().__init__(operands=[source, dest], properties=props)


@irdl_op_definition
class BinaryOp(_VectorOp):
    """dest = lhs fn rhs; rhs may be one value per row or per column (`broadcast`).

    tile.binary %a, %b, %c {fn = "add", broadcast = "row", rows = 4 : i64, cols = 8 : i64} : ...
    """

    name = "tile.binary"
    fn = prop_def(StringAttr)
    broadcast = prop_def(StringAttr)
    lhs = operand_def(MemRefType)
    rhs = operand_def(MemRefType)
    dest = operand_def(MemRefType)

    def __init__(
        self, fn: str, lhs: SSAValue, rhs: SSAValue, dest: SSAValue, rows: int, cols: int, broadcast: str = "none"
    ):
        props = {"fn": StringAttr(fn), "broadcast": StringAttr(broadcast)} | _props(rows=rows, cols=cols)
        super().__init__(operands=[lhs, rhs, dest], properties=props)

    def verify_(self) -> None:
        self._require(self.broadcast.data in ("none", "row", "col"), "broadcast must be none, row or col")


@irdl_op_definition
class ScalarOp(_VectorOp):
    """dest = source fn value.

    tile.scalar %a, %b {fn = "mul", value = 1.250000e-01 : f64, rows = 4 : i64, cols = 8 : i64} : ...
    """

    name = "tile.scalar"
    fn = prop_def(StringAttr)
    value = prop_def(FloatAttr)
    source = operand_def(MemRefType)
    dest = operand_def(MemRefType)

    def __init__(self, fn: str, source: SSAValue, dest: SSAValue, value: float, rows: int, cols: int):
        props = {"fn": StringAttr(fn), "value": FloatAttr(float(value), f64)} | _props(rows=rows, cols=cols)
        super().__init__(operands=[source, dest], properties=props)


@irdl_op_definition
class ReduceOp(_VectorOp):
    """dest[r, 0] = fn over the columns of source row r.

    tile.reduce %a, %s {fn = "sum", rows = 4 : i64, cols = 8 : i64} : ...
    """

    name = "tile.reduce"
    fn = prop_def(StringAttr)
    source = operand_def(MemRefType)
    dest = operand_def(MemRefType)

    def __init__(self, fn: str, source: SSAValue, dest: SSAValue, rows: int, cols: int):
        props = {"fn": StringAttr(fn)} | _props(rows=rows, cols=cols)
        super().__init__(operands=[source, dest], properties=props)


@irdl_op_definition
class SelectOp(_VectorOp):
    """dest = cond ? on_true : on_false.

    tile.select %c, %a, %b, %d {rows = 4 : i64, cols = 8 : i64} : ...
    """

    name = "tile.select"
    cond = operand_def(MemRefType)
    on_true = operand_def(MemRefType)
    on_false = operand_def(MemRefType)
    dest = operand_def(MemRefType)

    def __init__(self, cond: SSAValue, on_true: SSAValue, on_false: SSAValue, dest: SSAValue, rows: int, cols: int):
        super().__init__(operands=[cond, on_true, on_false, dest], properties=_props(rows=rows, cols=cols))


@irdl_op_definition
class ExpSumOp(_VectorOp):
    """The exponentials of a softmax and their row sums in one pass: dest = exp(source - row_max), with
    row_max [rows, 1] broadcast along each row and dest rounded to its type; sums[r, 0] = the sum of
    dest's row r as rounded (so that it matches the weights a later P V product uses).

    tile.exp_sum %s, %m, %p, %l {rows = 4 : i64, cols = 8 : i64} : ...
    """

    name = "tile.exp_sum"
    source = operand_def(MemRefType)
    row_max = operand_def(MemRefType)
    dest = operand_def(MemRefType)
    sums = operand_def(MemRefType)

    def __init__(self, source: SSAValue, row_max: SSAValue, dest: SSAValue, sums: SSAValue, rows: int, cols: int):
        super().__init__(operands=[source, row_max, dest, sums], properties=_props(rows=rows, cols=cols))

    def verify_(self) -> None:
        sums = self.sums.type
        self._require(isinstance(sums, MemRefType) and sums.element_type == f32, "sums must be an f32 tile")


@irdl_op_definition
class RopeOp(_VectorOp):
    """The rotary embedding of source's first `roped` columns, head by head: per head of `head_dim`
    columns with halves x_lo, x_hi, lo = x_lo cos_lo - x_hi sin_lo and hi = x_hi cos_hi + x_lo sin_hi,
    where tables holds cos in its first `rows` rows and sin in the next `rows` ([2 rows, head_dim]);
    the columns after them are copied.

    tile.rope %x, %t, %y {rows = 4 : i64, cols = 16 : i64, head_dim = 8 : i64, roped = 8 : i64} : ...
    """

    name = "tile.rope"
    source = operand_def(MemRefType)
    tables = operand_def(MemRefType)
    dest = operand_def(MemRefType)
    head_dim = prop_def(IntegerAttr)
    roped = prop_def(IntegerAttr)

    def __init__(
        self, source: SSAValue, tables: SSAValue, dest: SSAValue, rows: int, cols: int, head_dim: int, roped: int
    ):
        props = _props(rows=rows, cols=cols, head_dim=head_dim, roped=roped)
        super().__init__(operands=[source, tables, dest], properties=props)

    def verify_(self) -> None:
        head_dim, roped = self.int_prop("head_dim"), self.int_prop("roped")
        self._require(head_dim > 0 and head_dim % 2 == 0, "head_dim must be even and positive")
        self._require(0 <= roped <= self.int_prop("cols") and roped % head_dim == 0, "roped must be whole heads")


@irdl_op_definition
class FillOp(_VectorOp):
    """dest = value.

    tile.fill %t {value = 0.000000e+00 : f64, rows = 4 : i64, cols = 8 : i64} : memref<...>
    """

    name = "tile.fill"
    value = prop_def(FloatAttr)
    dest = operand_def(MemRefType)

    def __init__(self, dest: SSAValue, value: float, rows: int, cols: int):
        props = {"value": FloatAttr(float(value), f64)} | _props(rows=rows, cols=cols)
        super().__init__(operands=[dest], properties=props)


@irdl_op_definition
class CausalMaskOp(_VectorOp):
    """In place, with d = diagonal (+ loop_strides . ivs): dest[i, j] = -inf where j > i' + d,
    and where j <= i' + d - window when window > 0 (sliding-window attention); i' = i mod period
    when period > 0 (the query rows of several heads stacked), else i.

    tile.causal %s {rows = 4 : i64, cols = 8 : i64, diagonal = 0 : i64, loop_strides = [4 : i64], window = 0 : i64}
        : memref<...>
    """

    name = "tile.causal"
    diagonal = prop_def(IntegerAttr)
    loop_strides = prop_def(ArrayAttr)
    window = prop_def(IntegerAttr)
    period = opt_prop_def(IntegerAttr)
    dest = operand_def(MemRefType)

    def __init__(
        self,
        dest: SSAValue,
        rows: int,
        cols: int,
        diagonal: int,
        loop_strides: Sequence[int],
        window: int = 0,
        period: int = 0,
    ):
        props = _props(rows=rows, cols=cols, diagonal=diagonal, loop_strides=list(loop_strides), window=window)
        if period:
            props |= _props(period=period)
        super().__init__(operands=[dest], properties=props)


@irdl_op_definition
class AllReduceOp(_VectorOp):
    """dest = the sum of `source` over the `chips` chips of the tensor-parallel group (link engine).

    tile.all_reduce %x, %x {chips = 2 : i64, rows = 4 : i64, cols = 8 : i64} : memref<...>, memref<...>
    """

    name = "tile.all_reduce"
    chips = prop_def(IntegerAttr)
    source = operand_def(MemRefType)
    dest = operand_def(MemRefType)

    def __init__(self, source: SSAValue, dest: SSAValue, chips: int, rows: int, cols: int):
        super().__init__(operands=[source, dest], properties=_props(chips=chips, rows=rows, cols=cols))


@irdl_op_definition
class SignalOp(TileOp):
    """Engine `engine` increments semaphore `sem` once its earlier work completes.

    tile.signal {engine = "mxu", sem = 3 : i64}
    """

    name = "tile.signal"
    assembly_format = "attr-dict"
    engine = prop_def(StringAttr)
    sem = prop_def(IntegerAttr)

    def __init__(self, engine: str, sem: int):
        super().__init__(properties={"engine": str_attr(engine), "sem": i64_attr(sem)})


@irdl_op_definition
class WaitOp(TileOp):
    """Engine `engine` starts nothing later until semaphore `sem` has a token.

    tile.wait {engine = "dma_load", sem = 3 : i64}
    """

    name = "tile.wait"
    assembly_format = "attr-dict"
    engine = prop_def(StringAttr)
    sem = prop_def(IntegerAttr)

    def __init__(self, engine: str, sem: int):
        super().__init__(properties={"engine": str_attr(engine), "sem": i64_attr(sem)})


Tile = Dialect(
    "tile",
    [
        HbmBufferOp,
        SramBufferOp,
        KernelOp,
        LoopOp,
        DmaLoadOp,
        DmaStoreOp,
        LinkSendOp,
        DmaGatherOp,
        DmaScatterOp,
        MatmulOp,
        UnaryOp,
        BinaryOp,
        ScalarOp,
        ReduceOp,
        SelectOp,
        ExpSumOp,
        RopeOp,
        FillOp,
        CausalMaskOp,
        AllReduceOp,
        SignalOp,
        WaitOp,
    ],
)
