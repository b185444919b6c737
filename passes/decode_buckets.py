"""decode-buckets: specialise a decode step for bounded context lengths.

A static KV cache holds `C` positions, but a decode step at position `p`
only needs the first `p + 1`. This pass clones `@decode` into
`@decode_<n>` for each bucket `n` (powers of two from `smallest` up to `C`)
whose attention reads only the first `n` cache positions (and mask columns),
so decode time grows with the context instead of always paying for `C`.
Keys past the current position are masked anyway, so the result is the
same whenever `n > p`. Before::

    func.func @decode(...) {
      %o = tfm.attention %q, %k, %v, %m {...} : (..., tensor<1x2x64x8xf32>, ..., tensor<1x1x1x64xi1>) -> ...
    }

After (smallest = 16)::

    func.func @decode_16(...) {
      %k16 = tfm.slice %k {dim = 2 : i64, start = 0 : i64, end = 16 : i64, step = 1 : i64} : ...
      ...
      %o = tfm.attention %q, %k16, %v16, %m16 {...}
    }
    func.func @decode_32(...) { ... }
    func.func @decode_64(...) { ... }
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass

from tasic.ir import tfm


def bucket_sizes(context: int, smallest: int) -> list[int]:
    """Powers of two from `smallest` below `context`, then `context` itself."""
    sizes = []
    size = smallest
    while size < context:
        sizes.append(size)
        size *= 2
    return [*sizes, context]


@dataclass(frozen=True)
class DecodeBucketsPass(ModulePass):
    """Replace @decode by @decode_<n> clones whose attention reads n cache positions."""

    name = "decode-buckets"
    smallest: int = 64

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        """Clone and specialise the decode function, if there is one."""
        decode = next(
            (f for f in op.body.block.ops if isinstance(f, func.FuncOp) and f.sym_name.data == "decode"), None
        )
        if decode is None:
            return
        contexts = {tfm.shape_of(a.key)[2] for a in decode.walk() if isinstance(a, tfm.AttentionOp)}
        if len(contexts) != 1:
            return
        context = contexts.pop()
        for size in bucket_sizes(context, self.smallest):
            clone = decode.clone()
            clone.sym_name = StringAttr(f"decode_{size}")
            if size < context:
                for attention in [a for a in clone.walk() if isinstance(a, tfm.AttentionOp)]:
                    _bound_keys(attention, size)
            op.body.block.insert_op_before(clone, decode)
        decode.detach()
        decode.erase()


def _bound_keys(attention: tfm.AttentionOp, size: int) -> None:
    """Make the attention read only the first `size` key positions."""
    for index, dim in ((1, 2), (2, 2), (3, -1)):
        if index >= len(attention.operands):
            continue
        value = attention.operands[index]
        shape = list(tfm.shape_of(value))
        axis = dim % len(shape)
        if shape[axis] == 1:
            continue  # a mask broadcast over keys
        attention.operands[index] = _slice_before(attention, value, axis, size)


def _slice_before(anchor: tfm.AttentionOp, value: SSAValue, axis: int, size: int) -> SSAValue:
    shape = list(tfm.shape_of(value))
    shape[axis] = size
    typ = value.type
    assert isinstance(typ, TensorType)
    sliced = tfm.SliceOp(value, axis, 0, size, 1, TensorType(typ.element_type, shape))
    anchor.parent_block().insert_op_before(sliced, anchor)  # type: ignore[union-attr]
    return sliced.result
