"""insert-sync: make every cross-engine dependency explicit with semaphores.

Engines run concurrently and in order; an op that touches memory another
engine touched earlier (read after write, write after read or write) waits
for a token that engine signals after it. Inside a rolled loop, a dependency
on a later op of the previous iteration gets a token pre-signalled before the
loop and drained after it. Consecutive kernels are separated by a barrier through a hub engine. Example::

    tile.dma_load %x, %a {...}
    tile.unary %a, %b {fn = "exp", ...}

becomes::

    tile.dma_load %x, %a {...}
    tile.signal {engine = "dma_load", sem = 2 : i64}
    tile.wait {engine = "vpu", sem = 2 : i64}
    tile.unary %a, %b {fn = "exp", ...}
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, SSAValue
from xdsl.passes import ModulePass

from tasic.ir import tile
from tasic.passes.tiling.builder import tile_bytes

ENGINES = ("dma_load", "dma_store", "mxu", "vpu")
FORWARD, CARRIED = 0, 1


def semaphore(producer: str, consumer: str, kind: int) -> int:
    """The semaphore of an ordered engine pair and dependency kind."""
    pair = ENGINES.index(producer) * (len(ENGINES) - 1) + _other_index(producer, consumer)
    return kind * len(ENGINES) * (len(ENGINES) - 1) + pair


def _other_index(producer: str, consumer: str) -> int:
    others = [e for e in ENGINES if e != producer]
    return others.index(consumer)


@dataclass
class Leaf:
    """An engine op with what it reads and writes."""

    op: Operation
    engine: str
    reads: list[object] = field(default_factory=list)
    writes: list[object] = field(default_factory=list)


def _resource(value: SSAValue) -> object:
    owner = value.owner
    if isinstance(owner, tile.SramBufferOp):
        start = owner.int_prop("offset")
        return ("sram", start, start + tile_bytes(owner.result.type))
    return ("hbm", value)


def _overlap(a: object, b: object) -> bool:
    if a[0] != b[0]:  # type: ignore[index]
        return False
    if a[0] == "hbm":  # type: ignore[index]
        return a[1] is b[1]  # type: ignore[index]
    return a[1] < b[2] and b[1] < a[2]  # type: ignore[index]


def leaf_of(op: Operation) -> Leaf | None:
    """Engine, reads and writes of a tile op (None for structure ops)."""
    r = _resource
    if isinstance(op, tile.DmaLoadOp):
        return Leaf(op, "dma_load", [r(op.source)], [r(op.dest)])
    if isinstance(op, tile.DmaGatherOp):
        return Leaf(op, "dma_load", [r(op.table), r(op.ids)], [r(op.dest)])
    if isinstance(op, tile.DmaScatterOp):
        return Leaf(op, "dma_store", [r(op.source), r(op.ids)], [r(op.table)])
    if isinstance(op, tile.DmaStoreOp):
        return Leaf(op, "dma_store", [r(op.source)], [r(op.dest)])
    if isinstance(op, tile.MatmulOp):
        return Leaf(op, "mxu", [r(op.lhs), r(op.rhs), r(op.acc)], [r(op.acc)])
    if isinstance(op, tile.UnaryOp | tile.ScalarOp | tile.ReduceOp):
        return Leaf(op, "vpu", [r(op.source)], [r(op.dest)])
    if isinstance(op, tile.BinaryOp):
        return Leaf(op, "vpu", [r(op.lhs), r(op.rhs)], [r(op.dest)])
    if isinstance(op, tile.SelectOp):
        return Leaf(op, "vpu", [r(op.cond), r(op.on_true), r(op.on_false)], [r(op.dest)])
    if isinstance(op, tile.FillOp):
        return Leaf(op, "vpu", [], [r(op.dest)])
    if isinstance(op, tile.CausalMaskOp):
        return Leaf(op, "vpu", [r(op.dest)], [r(op.dest)])
    return None


def _conflict(first: Leaf, second: Leaf) -> bool:
    for w in first.writes:
        if any(_overlap(w, x) for x in second.reads + second.writes):
            return True
    return any(_overlap(x, w) for x in first.reads for w in second.writes)


def _ancestor_in(op: Operation, block: Block) -> Operation:
    while op.parent_block() is not block:
        op = op.parent_op()  # type: ignore[assignment]
    return op


def _common_block(a: Operation, b: Operation) -> Block:
    blocks_a = []
    block = a.parent_block()
    while block is not None:
        blocks_a.append(block)
        parent = block.parent_op()
        block = parent.parent_block() if parent is not None else None
    block = b.parent_block()
    while block not in blocks_a:
        block = block.parent_op().parent_block()  # type: ignore[union-attr]
    return block  # type: ignore[return-value]


@dataclass(frozen=True)
class InsertSyncPass(ModulePass):
    """Insert tile.signal / tile.wait for every cross-engine dependency."""

    name = "insert-sync"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        """Synchronise within kernels, then put a barrier between consecutive kernels of a function."""
        for function in op.body.block.ops:
            previous: tuple[tile.KernelOp, set[str]] | None = None
            for kernel in [k for k in function.walk() if isinstance(k, tile.KernelOp)]:
                leaves = [leaf for o in kernel.walk() if (leaf := leaf_of(o)) is not None]
                engines = {leaf.engine for leaf in leaves}
                _sync_kernel(leaves)
                if previous is not None:
                    _barrier(previous[0], previous[1], kernel, engines)
                previous = (kernel, engines)


def _index_in_block(op: Operation) -> int:
    block = op.parent_block()
    assert block is not None
    return block.get_operation_index(op)


def _sync_kernel(leaves: list[Leaf]) -> None:
    forward: dict[tuple[int, str, str], tuple[Operation, Operation]] = {}
    for j, consumer in enumerate(leaves):
        seen: set[str] = set()
        for producer in reversed(leaves[:j]):
            if producer.engine == consumer.engine or producer.engine in seen:
                continue
            if _conflict(producer, consumer):
                seen.add(producer.engine)
                block = _common_block(producer.op, consumer.op)
                p, x = _ancestor_in(producer.op, block), _ancestor_in(consumer.op, block)
                key = (id(x), producer.engine, consumer.engine)
                if key not in forward or _index_in_block(forward[key][0]) < _index_in_block(p):
                    forward[key] = (p, x)
    carried = _carried_edges(leaves)
    _place_forward(forward)
    for (loop, producer_engine, consumer_engine), (p, x) in carried.items():
        sem = semaphore(producer_engine, consumer_engine, CARRIED)
        _insert_after(p, tile.SignalOp(producer_engine, sem))
        _insert_before(x, tile.WaitOp(consumer_engine, sem))
        _insert_before(loop, tile.SignalOp(producer_engine, sem))
        _insert_after(loop, tile.WaitOp(consumer_engine, sem))


def _place_forward(forward: dict[tuple[int, str, str], tuple[Operation, Operation]]) -> None:
    """Insert forward tokens, skipping waits an earlier wait of the same engine already covers."""
    by_block: dict[tuple[int, str, str], list[tuple[Operation, Operation]]] = {}
    for (_, producer_engine, consumer_engine), (p, x) in forward.items():
        by_block.setdefault((id(x.parent_block()), producer_engine, consumer_engine), []).append((p, x))
    for (_, producer_engine, consumer_engine), edges in by_block.items():
        edges.sort(key=lambda e: _index_in_block(e[1]))
        covered = -1
        sem = semaphore(producer_engine, consumer_engine, FORWARD)
        for p, x in edges:
            p_index = _index_in_block(p)
            if p_index <= covered:
                continue
            covered = p_index
            _insert_after(p, tile.SignalOp(producer_engine, sem))
            _insert_before(x, tile.WaitOp(consumer_engine, sem))


def _carried_edges(leaves: list[Leaf]) -> dict[tuple[Operation, str, str], tuple[Operation, Operation]]:
    """Per loop and engine pair: the latest producer of one iteration and the earliest consumer of the next."""
    edges: dict[tuple[Operation, str, str], tuple[Operation, Operation]] = {}
    for i, consumer in enumerate(leaves):
        loop = consumer.op.parent_op()
        while isinstance(loop, tile.LoopOp):
            body = loop.body.block
            for producer in leaves[i + 1 :]:
                if producer.engine == consumer.engine or not _inside(producer.op, loop):
                    continue
                if not _conflict(producer, consumer):
                    continue
                p, x = _ancestor_in(producer.op, body), _ancestor_in(consumer.op, body)
                key = (loop, producer.engine, consumer.engine)
                if key in edges:
                    old_p, old_x = edges[key]
                    p = p if _index_in_block(p) > _index_in_block(old_p) else old_p
                    x = x if _index_in_block(x) < _index_in_block(old_x) else old_x
                edges[key] = (p, x)
            loop = loop.parent_op()
    return edges


def _inside(op: Operation, ancestor: Operation) -> bool:
    parent = op.parent_op()
    while parent is not None:
        if parent is ancestor:
            return True
        parent = parent.parent_op()
    return False


def _insert_after(anchor: Operation, new: Operation) -> None:
    block = anchor.parent_block()
    assert block is not None
    block.insert_op_after(new, anchor)


def _insert_before(anchor: Operation, new: Operation) -> None:
    block = anchor.parent_block()
    assert block is not None
    block.insert_op_before(new, anchor)


HUB = "dma_load"


def _barrier(prev: tile.KernelOp, prev_engines: set[str], kernel: tile.KernelOp, engines: set[str]) -> None:
    """`kernel` starts after `prev` has finished: a barrier through one hub engine.

    Every other engine of `prev` signals the hub; the hub waits for all of them,
    then signals every other engine of `kernel`, which waits before its first op.
    That is 2 x (n - 1) token pairs instead of one per engine pair.
    """
    first = kernel.body.block.first_op
    while first is not None and isinstance(first, tile.SramBufferOp):
        first = first.next_op

    def at_start(op: Operation) -> None:
        if first is None:
            kernel.body.block.add_op(op)
        else:
            kernel.body.block.insert_op_before(op, first)

    for producer in sorted(prev_engines - {HUB}):
        sem = semaphore(producer, HUB, FORWARD)
        prev.body.block.add_op(tile.SignalOp(producer, sem))
        at_start(tile.WaitOp(HUB, sem))
    for consumer in sorted(engines - {HUB}):
        sem = semaphore(HUB, consumer, FORWARD)
        at_start(tile.SignalOp(HUB, sem))
        at_start(tile.WaitOp(consumer, sem))
