"""Kernel order: engines run their instructions in program order, so the order of kernels decides
what can overlap.

- KV-cache writes go first: a cache write queued behind another kernel's stores waits for them, and
  the attention reading the cache waits with it.
- Independent attention ops (a prompt's prefill and each decode group) interleave their kernels:
  the prefill is vector-bound and the decodes DMA-bound, so with the decode kernels between the
  prefill's query-tile kernels, the DMA engine streams the decode caches while the VPU works on the
  prompt::

      prefill q0, prefill q1, decode0, decode1   ->   prefill q0, decode0, prefill q1, decode1
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.ir import Operation, SSAValue

from tasic.ir import tfm, tile
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
    """Lower `ops` in order, then interleave the kernels of each run of independent attention ops."""
    group: list[tuple[tfm.AttentionOp, list[tile.KernelOp]]] = []
    for op in ops:
        last = ctx.block.last_op
        lower(ctx, op)
        created, new = [], (last.next_op if last is not None else ctx.block.first_op)
        while new is not None:
            if isinstance(new, tile.KernelOp):
                created.append(new)
            new = new.next_op
        if not created:
            continue
        if isinstance(op, tfm.AttentionOp) and _independent(op, [a for a, _ in group]):
            group.append((op, created))
            continue
        _interleave(ctx, group)
        group = [(op, created)] if isinstance(op, tfm.AttentionOp) else []
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
    """Spread the other ops' kernels evenly between the kernels of the op with the most."""
    if len(group) < 2:
        return
    lists = sorted((kernels for _, kernels in group), key=len, reverse=True)
    main, rest = lists[0], [k for kernels in lists[1:] for k in kernels]
    keyed = [((i + 0.5) / len(main), 0, k) for i, k in enumerate(main)]
    keyed += [((j + 0.5) / len(rest), 1, k) for j, k in enumerate(rest)]
    order = [k for _, _, k in sorted(keyed, key=lambda item: item[:2])]
    anchor = group[-1][1][-1].next_op  # kernels are appended as they are lowered: the group's last is last
    for kernel in order:
        kernel.detach()
    for kernel in order:
        if anchor is None:
            ctx.block.add_op(kernel)
        else:
            ctx.block.insert_op_before(kernel, anchor)
