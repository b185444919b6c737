"""State of one run of the tile pass: HBM buffers, value views, dtype policy."""

from __future__ import annotations

from dataclasses import dataclass, field

from xdsl.dialects.builtin import TensorType, f32
from xdsl.ir import Attribute, Block, Operation, SSAValue

from tasic.backend.target import Target
from tasic.ir import tile
from tasic.ir.tfm import WeightOp, element_type, fp8_max, is_float, shape_of
from tasic.passes.tiling.builder import KernelBuilder
from tasic.passes.tiling.dtypes import element_type as dtype_type
from tasic.passes.tiling.views import View


@dataclass
class TileContext:
    """Where the tile pass keeps what it has lowered so far."""

    target: Target
    float_dtype: str  # HBM storage of float tensors: "f32" or "bf16"
    block: Block  # body of the new tile-level function
    output_names: dict[SSAValue, list[str]]  # tfm values returned by the function
    decode_batch: bool = True  # see TilePass
    flash: bool = True  # see TilePass
    cost_model: bool = True  # see TilePass
    epilogue_fusion: bool = True  # see TilePass
    allreduce_overlap: bool = True  # see TilePass
    kv_dtype: str = ""  # HBM storage of float KV-cache state; "" stores it as float_dtype
    fused: set[Operation] = field(default_factory=set)  # ops a kernel has already computed (epilogues)
    views: dict[SSAValue, View] = field(default_factory=dict)
    placed: dict[SSAValue, View] = field(default_factory=dict)  # results a consumer's buffer already holds
    # results placed in an 8-bit float buffer: the static scale to divide by before the saturating store
    store_scales: dict[SSAValue, float] = field(default_factory=dict)
    weights: dict[tuple[str, bool], SSAValue] = field(default_factory=dict)
    # flash tilings chosen so far, by attention shapes, SRAM budget and shared work (attention_pipeline)
    flash_choices: dict[object, tuple[int, int, int] | None] = field(default_factory=dict)
    temp_count: int = 0

    @property
    def sram_budget(self) -> int:
        """SRAM bytes one kernel may use (all of it for now)."""
        return self.target.sram.bytes

    @property
    def mxu_type(self) -> Attribute:
        """Element type of matrix-engine operand tiles."""
        return dtype_type(self.float_dtype)

    def storage_type(self, typ: Attribute) -> Attribute:
        """HBM element type of a tfm tensor or element type (8-bit floats, chosen by quantisation, stay so)."""
        elem = typ.element_type if isinstance(typ, TensorType) else typ
        if fp8_max(elem) is not None:
            return elem
        return dtype_type(self.float_dtype) if is_float(elem) else elem

    def kv_storage_type(self, typ: Attribute) -> Attribute:
        """HBM element type of KV-cache state: `kv_dtype` for floats when set, else `storage_type`."""
        if self.kv_dtype and is_float(typ.element_type if isinstance(typ, TensorType) else typ):
            return dtype_type(self.kv_dtype)
        return self.storage_type(typ)

    def sram_type(self, typ: Attribute) -> Attribute:
        """SRAM element type the VPU computes a tensor in (f32 for floats)."""
        elem = typ.element_type if isinstance(typ, TensorType) else typ
        return f32 if is_float(elem) else elem

    def hbm(
        self,
        name: str,
        kind: str,
        shape: tuple[int, ...],
        elem: Attribute,
        transpose: bool = False,
        shard: tuple[int, int] | None = None,
    ) -> SSAValue:
        """Declare an HBM buffer at the top of the function."""
        op = tile.HbmBufferOp(name, kind, tile.memref(shape, elem, tile.HBM), transpose, shard)
        first = self.block.first_op
        while first is not None and isinstance(first, tile.HbmBufferOp):
            first = first.next_op
        if first is None:
            self.block.add_op(op)
        else:
            self.block.insert_op_before(op, first)
        return op.result

    def weight(
        self,
        name: str,
        shape: tuple[int, ...],
        elem: Attribute,
        transpose: bool = False,
        shard: tuple[int, int] | None = None,
    ) -> View:
        """A weight buffer (once per name, layout and shard); `shape` is this chip's part."""
        key = (name, transpose, shard)
        if key not in self.weights:
            stored = (shape[1], shape[0]) if transpose else shape
            self.weights[key] = self.hbm(name, "weight", stored, self.storage_type(elem), transpose, shard)
        buffer = self.weights[key]
        return View.dense(buffer, tuple(buffer.type.get_shape()))

    def result_view(self, value: SSAValue) -> View:
        """A fresh dense buffer for a tfm result: a model output when returned, else a temporary (or the
        window of a consumer's buffer the result was placed in, `placed`)."""
        if value in self.placed:
            self.views[value] = self.placed.pop(value)
            return self.views[value]
        shape = shape_of(value)
        names = self.output_names.get(value)
        if names:
            name, kind = names.pop(0), "output"
        else:
            self.temp_count += 1
            name, kind = f"t{self.temp_count}", "temp"
        view = View.dense(self.hbm(name, kind, shape, self.storage_type(value.type)), shape)
        self.views[value] = view
        return view

    def output_view(self, value: SSAValue) -> View:
        """The buffer made for a result already (its lowering was deferred, tiling/schedule.py), else a
        fresh one (`result_view`)."""
        return self.views[value] if value in self.views else self.result_view(value)

    def kernel(self, loc: str) -> KernelBuilder:
        """Start a new tile.kernel at the end of the function."""
        op = tile.KernelOp(loc)
        self.block.add_op(op)
        return KernelBuilder(op)

    def view_of(self, value: SSAValue) -> View:
        """The view holding a tfm value (weights get their buffer on first use)."""
        if value not in self.views and isinstance(value.owner, WeightOp):
            owner = value.owner
            self.views[value] = self.weight(owner.sym.data, shape_of(value), element_type(value), shard=owner.shard)
        return self.views[value]

    def elem_of(self, value: SSAValue) -> Attribute:
        """The tfm element type of a value."""
        return element_type(value)
