"""tile: lower tfm ops to kernels of SRAM tiles, DMA and engine ops in rolled loops.

Tile sizes come from the target's matrix engine and SRAM capacity. Layout
ops (reshape, transpose, slice, expand) become strided views and cost no
kernel. Input (tfm)::

    func.func @main(%x: tensor<8x32xf32>) -> tensor<8x32xf32> attributes {...} {
      %y = tfm.unary %x {fn = "exp"} : (tensor<8x32xf32>) -> tensor<8x32xf32>
      func.return %y : tensor<8x32xf32>
    }

Output (tile)::

    func.func @main() {
      %x = tile.hbm {name = "x", kind = "input"} : memref<8x32xf32, "hbm">
      %y = tile.hbm {name = "output", kind = "output"} : memref<8x32xf32, "hbm">
      tile.kernel "tfm.unary" {
        %a = tile.sram {offset = -1 : i64} : memref<8x32xf32, "sram">
        ...
        tile.dma_load %x, %a {...}
        tile.unary %a, %b {fn = "exp", ...}
        tile.dma_store %b, %y {...}
      }
    }
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, FunctionType, IntegerAttr, ModuleOp, StringAttr
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass

from tasic.backend.target import load_target
from tasic.ir import tfm, tile
from tasic.passes.tiling import attention, kernels, matmul
from tasic.passes.tiling.context import TileContext
from tasic.passes.tiling.schedule import lower_interleaving_attention, state_writes_early
from tasic.passes.tiling.views import View

KERNELS: dict[type[Operation], Callable[[TileContext, Operation], None]] = {
    tfm.UnaryOp: kernels.unary,
    tfm.BinaryOp: kernels.binary,
    tfm.ScalarOp: kernels.scalar,
    tfm.WhereOp: kernels.where,
    tfm.MatmulOp: matmul.matmul,
    tfm.LinearOp: matmul.linear,
    tfm.QuantizeOp: kernels.quantize,
    tfm.SoftmaxOp: kernels.softmax,
    tfm.LayerNormOp: kernels.layer_norm,
    tfm.RmsNormOp: kernels.rms_norm,
    tfm.ReduceOp: kernels.reduce,
    tfm.EmbeddingOp: kernels.embedding,
    tfm.AttentionOp: attention.attention,
    tfm.ConcatOp: kernels.concat,
    tfm.IndexCopyOp: kernels.index_copy,
    tfm.AllReduceOp: kernels.all_reduce,
    tfm.SendOp: kernels.send,
    tfm.RopeOp: kernels.rope,
}  # type: ignore[dict-item]


def io_names(function: func.FuncOp, key: str, count: int, default: str) -> list[str]:
    """Names recorded by the frontend (any number when count < 0), else numbered defaults."""
    attr = function.attributes.get(key)
    if isinstance(attr, ArrayAttr) and (count < 0 or len(attr.data) == count):
        return [a.data for a in attr.data]  # type: ignore[union-attr]
    return [default if count == 1 else f"{default}{i}" for i in range(count)]


@dataclass(frozen=True)
class TilePass(ModulePass):
    """Lower every tfm function to tile kernels for a target; float tensors stored as `dtype`.

    `decode_batch` lets attention with few query rows per sequence (decode) put many sequences
    through each matrix instruction; false gives one sequence and head group at a time. `flash`
    tiles long attention into key blocks with an online softmax (skipping blocks above a causal
    diagonal); false computes whole score rows per query tile. `cost_model` picks matmul tiles by
    estimated time under the SRAM capacity (tiling/cost.py); false uses fixed caps (8 x 8 arrays).
    `epilogue_fusion` applies elementwise consumers of a matmul or all-reduce to its output tile
    before the store (tiling/epilogue.py); false gives each its own kernel. `allreduce_overlap`
    reduces a row-parallel matmul's output in chunks of whole rows inside the matmul kernel (with what
    follows: residual add, rms_norm, quantisation), so the links carry one chunk while the engines
    compute the next; false gives the all-reduce a kernel of its own. `kv_dtype` stores float
    KV-cache state in that dtype instead of `dtype` (e.g. f8e4m3: half the bytes of a bf16 cache;
    written saturating, widened by the DMA that loads it); "" keeps `dtype`.
    """

    name = "tile"
    target: str = "tiny"
    dtype: str = "f32"
    decode_batch: bool = True
    flash: bool = True
    cost_model: bool = True
    epilogue_fusion: bool = True
    allreduce_overlap: bool = True
    kv_dtype: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        """Replace each tfm function by its tile-level form."""
        target = load_target(self.target)
        for function in [f for f in op.body.block.ops if isinstance(f, func.FuncOp)]:
            if any(isinstance(o, tfm.TfmOp) for o in function.walk()):
                function.detach()
                options = {
                    "decode_batch": self.decode_batch,
                    "flash": self.flash,
                    "cost_model": self.cost_model,
                    "epilogue_fusion": self.epilogue_fusion,
                    "allreduce_overlap": self.allreduce_overlap,
                    "kv_dtype": self.kv_dtype,
                }
                op.body.block.add_op(_lower_function(function, target, self.dtype, options))
                function.erase()


def _lower_function(function: func.FuncOp, target, dtype: str, options: dict[str, bool | str]) -> func.FuncOp:
    args = function.body.block.args
    ret = function.body.block.last_op
    assert isinstance(ret, func.ReturnOp)
    input_names = io_names(function, "tfm.input_names", len(args), "input")
    output_names = io_names(function, "tfm.output_names", len(ret.arguments), "output")
    state_names = (
        set(io_names(function, "tfm.state_names", -1, "")) if "tfm.state_names" in function.attributes else set()
    )
    block = Block()
    returned: dict[SSAValue, list[str]] = {}
    states: list[tuple[SSAValue, str]] = []
    for value, name in zip(ret.arguments, output_names, strict=True):
        if name in state_names:
            states.append((value, name))
        else:
            returned.setdefault(value, []).append(name)
    context = TileContext(target=target, float_dtype=dtype, block=block, output_names=returned, **options)
    shards = _arg_shards(function)
    for arg, name in zip(args, input_names, strict=True):
        shape = tfm.shape_of(arg)
        kind = "kv" if name in state_names else "input"
        storage = context.kv_storage_type(arg.type) if kind == "kv" else context.storage_type(arg.type)
        buffer = context.hbm(name, kind, shape, storage, shard=shards.get(name))
        context.views[arg] = View.dense(buffer, shape)
    ops = state_writes_early([op for op in function.body.block.ops if not isinstance(op, func.ReturnOp)])
    kernels.place_concat_inputs(context, ops)
    lower_interleaving_attention(context, ops, _lower_op)
    for value, names in returned.items():
        for name in names:
            _materialise_output(context, value, name)
    for value, name in states:
        _write_back_state(context, value, name)
    block.add_op(func.ReturnOp())
    lowered = func.FuncOp(function.sym_name.data, FunctionType.from_lists([], []), Region(block))
    lowered.attributes["tfm.input_names"] = ArrayAttr([StringAttr(n) for n in input_names])
    lowered.attributes["tfm.output_names"] = ArrayAttr([StringAttr(n) for n in output_names])
    return lowered


def _arg_shards(function: func.FuncOp) -> dict[str, tuple[int, int]]:
    """(dim, chips) of each argument split over chips by shard-tp (`tfm.shards`, `tfm.chips`)."""
    shards, chips = function.attributes.get("tfm.shards"), function.attributes.get("tfm.chips")
    if not isinstance(shards, DictionaryAttr) or not isinstance(chips, IntegerAttr):
        return {}
    return {name: (dim.value.data, chips.value.data) for name, dim in shards.data.items()}  # type: ignore[attr-defined]


def _lower_op(context: TileContext, op: Operation) -> None:
    if op in context.fused:
        return  # computed in its producer's kernel (epilogue fusion)
    if isinstance(op, tfm.WeightOp):
        return  # buffers are declared on first use, in the layout that use needs
    view_op = _view_of_layout_op(context, op)
    if view_op is not None:
        context.views[op.results[0]] = view_op
        return
    kernel = KERNELS.get(type(op))
    if kernel is None:
        raise NotImplementedError(f"the tile pass cannot lower {op.name}")
    kernel(context, op)


def _view_of_layout_op(context: TileContext, op: Operation) -> View | None:
    """The result view of a layout op, or None for compute ops."""
    if isinstance(op, tfm.CastOp | tfm.ReshapeOp | tfm.TransposeOp | tfm.SliceOp | tfm.ExpandOp):
        source = context.view_of(op.input)
    if isinstance(op, tfm.CastOp):
        if context.storage_type(op.input.type) == context.storage_type(op.result.type):
            return source
        kernels.copy_into(context, kernels.loc_of(op), op.result, source)
        return context.views[op.result]
    if isinstance(op, tfm.ReshapeOp):
        shape = tfm.shape_of(op.result)
        view = source.reshape(shape)
        if view is None:
            temp = op.input
            kernels.copy_into(context, kernels.loc_of(op), temp, source)
            view = context.views[temp].reshape(shape)
        return view
    if isinstance(op, tfm.TransposeOp):
        return source.permute(op.permutation)
    if isinstance(op, tfm.SliceOp):
        return source.slice(*(a.value.data for a in (op.dim, op.start, op.end, op.step)))
    if isinstance(op, tfm.ExpandOp):
        return source.broadcast_to(tfm.shape_of(op.result))
    return None


def _write_back_state(context: TileContext, value: SSAValue, name: str) -> None:
    """Persistent state returned updated: store it into its KV buffer unless it already is there."""
    view = context.view_of(value)
    target = next(
        op.result
        for op in context.block.ops
        if isinstance(op, tile.HbmBufferOp) and op.sym.data == name and op.kind.data == "kv"
    )
    if view.buffer is target and view.offset == 0 and view.is_dense:
        return
    shape = tfm.shape_of(value)
    kernels.copy_to_view(context, f"state {name}", View.dense(target, shape), (view, context.sram_type(value.type)))


def _materialise_output(context: TileContext, value: SSAValue, name: str) -> None:
    """Make sure the returned value sits densely in an output buffer called `name`."""
    view = context.view_of(value)
    owner = view.buffer.owner
    assert isinstance(owner, tile.HbmBufferOp)
    if owner.sym.data == name and owner.kind.data == "output":
        return
    whole = view.offset == 0 and view.shape == tuple(view.buffer.type.get_shape()) and view.is_dense
    if owner.kind.data == "temp" and whole:
        owner.properties["name"] = StringAttr(name)
        owner.properties["kind"] = StringAttr("output")
        return
    context.output_names[value] = [name]
    kernels.copy_into(context, f"output {name}", value, view)
