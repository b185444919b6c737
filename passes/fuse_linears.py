"""fuse-linears: linears that read the same input become one linear over concatenated weights.

The q, k and v projections (and gate and up in a SwiGLU MLP) read one activation: fused, the
activation is read once, and the narrow k and v products (N = 128 per chip for Llama-3-70B on 8
chips) fill the matrix arrays together with q's. Each original result is a slice of the fused
one; slices are strided views in the tile pass, so they cost nothing. Before::

    %q = tfm.linear %x, %wq : (tensor<8x32xf32>, tensor<32x32xf32>) -> tensor<8x32xf32>
    %k = tfm.linear %x, %wk : (tensor<8x32xf32>, tensor<16x32xf32>) -> tensor<8x16xf32>

After (`q.weight|k.weight#cat1` is a derived weight, ir/weights.py)::

    %w = tfm.weight {name = "q.weight|k.weight#cat1"} : tensor<48x32xf32>
    %y = tfm.linear %x, %w : (tensor<8x32xf32>, tensor<48x32xf32>) -> tensor<8x48xf32>
    %q = tfm.slice %y {dim = 1, start = 0, end = 32, step = 1} : (tensor<8x48xf32>) -> tensor<8x32xf32>
    %k = tfm.slice %y {dim = 1, start = 32, end = 48, step = 1} : (tensor<8x48xf32>) -> tensor<8x16xf32>

Weights split over chips (shard-tp runs first) fuse when they are split alike; the fused weight
is concatenated in per-chip blocks, so each chip's part is the concatenation of its parts. Biases
fuse the same way when every linear of the group has a weight bias (or none has). The tile pass
computes a fused gate/up pair feeding silu(gate) * up as one gated kernel (tiling/matmul.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from tasic.ir import tfm
from tasic.ir.weights import concatenated_name


@dataclass(frozen=True)
class FuseLinearsPass(ModulePass):
    """Fuse every group of linears with one input and compatible weights (see the module docstring)."""

    name = "fuse-linears"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        """Fuse the groups of every function."""
        for function in [f for f in op.body.block.ops if isinstance(f, func.FuncOp)]:
            groups: dict[tuple[SSAValue, tuple], list[tfm.LinearOp]] = {}
            for linear in [o for o in function.body.block.ops if isinstance(o, tfm.LinearOp)]:
                key = _fusion_key(linear)
                if key is not None:
                    groups.setdefault((linear.input, key), []).append(linear)
            for group in groups.values():
                if len(group) > 1:
                    _fuse(group)


def _fusion_key(linear: tfm.LinearOp) -> tuple | None:
    """What linears must share to fuse (weight dtype, K, sharding, bias kind, result dtype), or None."""
    weight = linear.weight.owner
    if not isinstance(weight, tfm.WeightOp) or len(tfm.shape_of(weight.result)) != 2:
        return None
    bias = linear.bias.owner if linear.bias is not None else None
    if linear.bias is not None and not (isinstance(bias, tfm.WeightOp) and bias.shard == _bias_shard(weight)):
        return None
    return (
        tfm.element_type(weight.result),
        tfm.shape_of(weight.result)[1],
        weight.shard,
        linear.bias is not None,
        tfm.element_type(linear.result),
    )


def _bias_shard(weight: tfm.WeightOp) -> tuple[int, int] | None:
    """How a bias is split when its weight is: along its only dim for column-parallel weights."""
    return weight.shard if weight.shard is not None and weight.shard[0] == 0 else None


def _fuse(group: list[tfm.LinearOp]) -> None:
    first = group[0]
    weights = [linear.weight.owner for linear in group]
    assert all(isinstance(w, tfm.WeightOp) for w in weights)
    shard = weights[0].shard  # type: ignore[union-attr]
    blocks = shard[1] if shard is not None and shard[0] == 0 else 1
    widths = [tfm.shape_of(linear.weight)[0] for linear in group]
    k = tfm.shape_of(first.weight)[1]
    elem = tfm.element_type(first.weight)
    names = [w.sym.data for w in weights]  # type: ignore[union-attr]
    new: list[Operation] = []
    fused_weight = tfm.WeightOp(concatenated_name(names, blocks), TensorType(elem, (sum(widths), k)), shard)
    new.append(fused_weight)
    bias = None
    if first.bias is not None:
        bias_names = [linear.bias.owner.sym.data for linear in group]  # type: ignore[union-attr]
        bias_type = TensorType(tfm.element_type(first.bias), (sum(widths),))
        bias_op = tfm.WeightOp(concatenated_name(bias_names, blocks), bias_type, _bias_shard(weights[0]))  # type: ignore[arg-type]
        new.append(bias_op)
        bias = bias_op.result
    shape = tfm.shape_of(first.result)
    fused_type = TensorType(tfm.element_type(first.result), (*shape[:-1], sum(widths)))
    fused = tfm.LinearOp(first.input, fused_weight.result, bias, fused_type)
    locs = [linear.attributes.get("loc") for linear in group]
    if all(isinstance(loc, StringAttr) for loc in locs):
        fused.attributes["loc"] = StringAttr("+".join(loc.data for loc in locs))  # type: ignore[union-attr]
    new.append(fused)
    block = first.parent_block()
    assert block is not None
    block.insert_ops_before(new, first)
    start = 0
    for linear, width in zip(group, widths, strict=True):
        part = tfm.SliceOp(fused.result, len(shape) - 1, start, start + width, 1, linear.result.type)
        if "loc" in linear.attributes:
            part.attributes["loc"] = linear.attributes["loc"]
        block.insert_op_before(part, first)
        linear.result.replace_all_uses_with(part.result)
        start += width
    for linear in group:
        inputs = [linear.weight.owner, *([linear.bias.owner] if linear.bias is not None else [])]
        linear.detach()
        linear.erase()
        for weight in inputs:
            if isinstance(weight, tfm.WeightOp) and not weight.result.uses:
                weight.detach()
                weight.erase()
