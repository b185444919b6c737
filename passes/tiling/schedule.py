"""Kernel order: engines run their instructions in program order, so the order of kernels decides
what can overlap.

- KV-cache writes go first: a cache write queued behind another kernel's stores waits for them, and
  the attention reading the cache waits with it.
- Independent attention ops (a prompt's prefill and each decode group) are lowered together, as one
  software-pipelined kernel whose decode items sit between the prefill's (tiling/attention.py
  `attention_group`): the prefill is vector-bound and the decodes DMA-bound, so the DMA engine
  streams the decode caches while the VPU works on the prompt. When they cannot share a kernel,
  their kernels interleave the same way::

      prefill q0, prefill q1, decode0, decode1   ->   prefill q0, decode0, prefill q1, decode1
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.ir import Operation, SSAValue

from tasic.ir import tfm, tile
from tasic.passes.tiling.attention import attention_group
from tasic.passes.tiling.attention_pipeline import spread
from tasic.passes.tiling.context import TileContext

LAYOUT_OPS = (tfm.ReshapeOp, tfm.TransposeOp, tfm.SliceOp, tfm.ExpandOp)


def state_writes_early(ops: list[Operation]) -> list[Operation]:
    """`ops` with every KV-cache write (tfm.index_copy), and the layout ops feeding it, moved up to just
    after the last computation it needs (linear time: each moved op is anchored to a position)."""
    position = {op: index for index, op in enumerate(ops)}
    anchors: dict[Operation, int] = {}

    def anchor(op: Operation) -> int:
        if op not in anchors:
            at = -1
            for operand in op.operands:
                owner = operand.owner
                if isinstance(owner, LAYOUT_OPS) and owner in position:
                    at = max(at, anchor(owner))
                elif owner in position:
                    at = max(at, position[owner])  # type: ignore[index]
            anchors[op] = at
        return anchors[op]

    for op in ops:
        if isinstance(op, tfm.IndexCopyOp):
            anchor(op)
    after: dict[int, list[Operation]] = {}
    for op in sorted(anchors, key=position.__getitem__):
        after.setdefault(anchors[op], []).append(op)
    order = list(after.get(-1, []))
    for index, op in enumerate(ops):
        if op not in anchors:
            order.append(op)
        order.extend(after.get(index, []))
    return order


def lower_interleaving_attention(
    ctx: TileContext, ops: list[Operation], lower: Callable[[TileContext, Operation], None]
) -> None:
    """Lower `ops` in order. A run of independent attention ops (only views between them) is lowered
    where the run ends: as one software-pipelined kernel (`attention_group`), or else op by op with
    their kernels interleaved. Each deferred op's result buffer is made at once, so the layout ops
    that read it are views of it."""
    run: list[tfm.AttentionOp] = []
    for op in ops:
        if isinstance(op, tfm.AttentionOp):
            if not _independent(op, run):  # it reads the run's results: the run goes first
                _lower_run(ctx, run, lower)
                run = []
            ctx.output_view(op.result)
            run.append(op)
            continue
        if run and _makes_kernel(ctx, op):
            _lower_run(ctx, run, lower)
            run = []
        lower(ctx, op)
    _lower_run(ctx, run, lower)


def _makes_kernel(ctx: TileContext, op: Operation) -> bool:
    """Whether lowering `op` may emit a kernel (layout ops are views unless they need a copy)."""
    if op in ctx.fused or isinstance(op, tfm.TransposeOp | tfm.SliceOp | tfm.ExpandOp | tfm.WeightOp):
        return False
    if isinstance(op, tfm.ReshapeOp):
        return ctx.view_of(op.input).reshape(tfm.shape_of(op.result)) is None
    if isinstance(op, tfm.CastOp):
        return ctx.storage_type(op.input.type) != ctx.storage_type(op.result.type)
    return True


def _lower_run(ctx: TileContext, run: list[tfm.AttentionOp], lower: Callable[[TileContext, Operation], None]) -> None:
    """One kernel for the run if `attention_group` can; else each op's kernels, interleaved."""
    if not run or attention_group(ctx, run):
        return
    group: list[tuple[tfm.AttentionOp, list[tile.KernelOp]]] = []
    for op in run:
        last = ctx.block.last_op
        lower(ctx, op)
        created, new = [], (last.next_op if last is not None else ctx.block.first_op)
        while new is not None:
            if isinstance(new, tile.KernelOp):
                created.append(new)
            new = new.next_op
        group.append((op, created))
    _interleave(ctx, group)


def _sources(value: SSAValue) -> SSAValue:
    """The value a chain of layout ops starts from."""
    while isinstance(value.owner, LAYOUT_OPS):
        value = value.owner.input
    return value


def _independent(op: tfm.AttentionOp, others: list[tfm.AttentionOp]) -> bool:
    results = {other.result for other in others}
    return not any(_sources(operand) in results for operand in op.operands)


def _interleave(ctx: TileContext, group: list[tuple[tfm.AttentionOp, list[tile.KernelOp]]]) -> None:
    """Spread the other ops' kernels evenly over the vector work of the op with the most kernels (a
    causal prefill's later query tiles have more keys), each placed at the middle of its share."""
    if len(group) < 2:
        return
    lists = sorted((kernels for _, kernels in group), key=len, reverse=True)
    main, rest = lists[0], [k for kernels in lists[1:] for k in kernels]
    order = spread(main, [vector_work(kernel) for kernel in main], rest)
    anchor = group[-1][1][-1].next_op  # kernels are appended as they are lowered: the group's last is last
    for kernel in order:
        kernel.detach()
    for kernel in order:
        if anchor is None:
            ctx.block.add_op(kernel)
        else:
            ctx.block.insert_op_before(kernel, anchor)


def vector_work(kernel: tile.KernelOp) -> int:
    """Elements the kernel's vector instructions process, loops counted (a proxy for its VPU time)."""

    def walk(block_ops: list[Operation], times: int) -> int:
        total = 0
        for op in block_ops:
            if isinstance(op, tile.LoopOp):
                total += walk(list(op.body.block.ops), times * op.count.value.data)
            elif isinstance(op, tile.UnaryOp | tile.BinaryOp | tile.ScalarOp | tile.ReduceOp):
                total += times * op.int_prop("rows") * op.int_prop("cols")
        return total

    return walk(list(kernel.body.block.ops), 1)
