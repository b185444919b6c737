"""insert-sync: make every cross-engine dependency explicit with semaphores, and no more.

Engines run concurrently and in order. An op that touches memory another engine touched earlier
(read after write, write after read or write; SRAM byte ranges, HBM byte ranges of DMA windows) waits for a
token that engine signals after it::

    tile.dma_load %x, %a {...}
    tile.unary %a, %b {fn = "exp", ...}

becomes::

    tile.dma_load %x, %a {...}
    tile.signal {engine = "dma_load", sem = 42 : i64}
    tile.wait {engine = "vpu", sem = 42 : i64}
    tile.unary %a, %b {fn = "exp", ...}

A wait orders all later work of the waiting engine after everything the signalling engine had done,
and had itself waited for, before its signal. Vector clocks per straight-line block track this, so
tokens that others imply are left out. The top level of a function's kernels is one such block:
kernel B waits only for the ops of earlier kernels it conflicts with (a token signalled after A's
op or loop, waited for before B's), so kernels overlap.

Inside a rolled loop, a dependency on a later op of the previous iteration gets a loop-carried token,
pre-signalled before the loop (as early in its kernel as the producer's own ops allow) and drained
after it; carried tokens implied by the forward ones are left out. Loops that run once are treated
as straight-line code. Details: docs/isa.md, Synchronisation.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from tasic.ir import tile
from tasic.passes.tiling.builder import tile_bytes
from tasic.passes.tiling.dtypes import element_bytes

ENGINES = ("dma_load", "dma_store", "mxu", "vpu", "link")
FORWARD, CARRIED, TOP = 0, 1, 2
"""Semaphore kinds: forward tokens in loop bodies, loop-carried tokens, tokens between top-level ops."""
HUB = "dma_load"
UNKNOWN = -(1 << 40)
"""A clock entry for "nothing known"; stays far below any item index when shifted by iterations."""

Resource = tuple[str, object, int, int]
"""("sram", None, first byte, end byte) or ("hbm", buffer name, first byte, end byte) of the bytes an op may
touch (an HBM window's bounding range over every iteration of its loops; a whole buffer when rows are
indexed at run time)."""
WHOLE = (0, 1 << 62)
"""The byte range of a whole HBM buffer."""
Clock = dict[str, int]
"""Per engine P: P's work up to this item of the block is known to have completed."""
Pair = tuple[str, str]
"""(producer engine, consumer engine)."""
Needs = dict[int, dict[str, dict[str, int]]]
"""Consumer item -> consumer engine -> producer engine -> the latest producer item it depends on."""


def semaphore(producer: str, consumer: str, kind: int) -> int:
    """The semaphore of an ordered engine pair and kind: 0 to 59, one producer and one consumer each."""
    pair = ENGINES.index(producer) * (len(ENGINES) - 1) + _other_index(producer, consumer)
    return kind * len(ENGINES) * (len(ENGINES) - 1) + pair


def _other_index(producer: str, consumer: str) -> int:
    others = [e for e in ENGINES if e != producer]
    return others.index(consumer)


@dataclass(eq=False)
class Block:
    """Items (engine ops and rolled loops) in program order: a loop body, or the kernels' top level.

    The ops of loops that run once are items of the enclosing block.
    """

    loop: tile.LoopOp | None
    level: int
    items: list[Operation] = field(default_factory=list)
    engines: list[frozenset[str]] = field(default_factory=list)
    bodies: list[Block | None] = field(default_factory=list)

    def add(self, op: Operation, engines: frozenset[str], body: Block | None = None) -> int:
        """Append an item; its index."""
        self.items.append(op)
        self.engines.append(engines)
        self.bodies.append(body)
        return len(self.items) - 1


@dataclass(eq=False)
class Leaf:
    """An engine op with what it reads and writes, and its (block, item index) per loop level."""

    op: Operation
    engine: str
    reads: list[Resource] = field(default_factory=list)
    writes: list[Resource] = field(default_factory=list)
    path: list[tuple[Block, int]] = field(default_factory=list)


@dataclass
class Token:
    """A signal by `producer` after item p and a wait by `consumer` before item x of one block."""

    producer: str
    consumer: str
    x: int
    p: int


@dataclass
class Summary:
    """What a rolled loop's last iteration tells the enclosing block (body item indices).

    `known[Q][P]`: at the end of the body, Q has seen P's work up to that item (negative: in the
    iteration before); `drained`: the same after the drain waits; `last[P]`: P's last item.
    """

    known: dict[str, Clock]
    drained: dict[str, Clock]
    last: dict[str, int]


def _resource(value: SSAValue, span: tuple[int, int] = WHOLE) -> Resource:
    """The SRAM tile's bytes, or bytes `span` of the HBM buffer (a name: lower-to-isa places the buffers of
    one name at one address)."""
    owner = value.owner
    if isinstance(owner, tile.SramBufferOp):
        start = owner.int_prop("offset")
        return ("sram", None, start, start + tile_bytes(owner.result.type))
    name = owner.sym.data if isinstance(owner, tile.HbmBufferOp) else value
    return ("hbm", name, *span)


def _window(op: tile.DmaLoadOp | tile.StoreOp | tile.DmaGatherOp | tile.DmaScatterOp, value: SSAValue) -> Resource:
    """The HBM bytes a strided window may touch in any iteration of its enclosing loops: its first and last
    element along rows, columns and each loop, whichever way the strides go. Gathered or scattered rows are
    the first `rows` elements of the index window."""
    rows, cols = op.int_prop("rows"), op.int_prop("cols")
    strides = tile.int_list(op.loop_strides)
    if isinstance(op, tile.DmaGatherOp | tile.DmaScatterOp):
        extents = [(1, rows - 1)]
    else:
        extents = [(op.int_prop("row_stride"), rows - 1), (op.int_prop("col_stride"), cols - 1)]
    extents += [
        (stride, loop.count.value.data - 1) for stride, loop in zip(strides, tile.enclosing_loops(op), strict=True)
    ]
    first = last = op.int_prop("offset")
    for stride, steps in extents:
        reach = stride * steps
        first, last = first + min(0, reach), last + max(0, reach)
    element = element_bytes(value.type.element_type)  # type: ignore[attr-defined]
    return _resource(value, (first * element, (last + 1) * element))


def _overlap(a: Resource, b: Resource) -> bool:
    return a[0] == b[0] and a[1] == b[1] and a[2] < b[3] and b[2] < a[3]  # type: ignore[operator]


def leaf_of(op: Operation) -> Leaf | None:
    """Engine, reads and writes of a tile op (None for structure ops)."""
    r = _resource
    if isinstance(op, tile.DmaLoadOp):
        return Leaf(op, "dma_load", [_window(op, op.source)], [r(op.dest)])
    if isinstance(op, tile.DmaGatherOp):
        return Leaf(op, "dma_load", [r(op.table), _window(op, op.ids)], [r(op.dest)])
    if isinstance(op, tile.DmaScatterOp):
        return Leaf(op, "dma_store", [r(op.source), _window(op, op.ids)], [r(op.table)])
    if isinstance(op, tile.DmaStoreOp):
        return Leaf(op, "dma_store", [r(op.source)], [_window(op, op.dest)])
    if isinstance(op, tile.LinkSendOp):
        return Leaf(op, "link", [r(op.source)], [_window(op, op.dest)])
    if isinstance(op, tile.MatmulOp):
        return Leaf(op, "mxu", [r(op.lhs), r(op.rhs), r(op.acc)], [r(op.acc)])
    if isinstance(op, tile.UnaryOp | tile.ScalarOp | tile.ReduceOp):
        return Leaf(op, "vpu", [r(op.source)], [r(op.dest)])
    if isinstance(op, tile.BinaryOp):
        return Leaf(op, "vpu", [r(op.lhs), r(op.rhs)], [r(op.dest)])
    if isinstance(op, tile.SelectOp):
        return Leaf(op, "vpu", [r(op.cond), r(op.on_true), r(op.on_false)], [r(op.dest)])
    if isinstance(op, tile.ExpSumOp):
        return Leaf(op, "vpu", [r(op.source), r(op.row_max)], [r(op.dest), r(op.sums)])
    if isinstance(op, tile.RopeOp):
        return Leaf(op, "vpu", [r(op.source), r(op.tables)], [r(op.dest)])
    if isinstance(op, tile.FillOp):
        return Leaf(op, "vpu", [], [r(op.dest)])
    if isinstance(op, tile.CausalMaskOp):
        return Leaf(op, "vpu", [r(op.dest)], [r(op.dest)])
    if isinstance(op, tile.AllReduceOp):
        return Leaf(op, "link", [r(op.source)], [r(op.dest)])
    return None


def _kernel_of(op: Operation) -> Operation | None:
    """The tile.kernel holding an op."""
    parent = op.parent_op()
    while parent is not None and not isinstance(parent, tile.KernelOp):
        parent = parent.parent_op()
    return parent


def _conflict(first: Leaf, second: Leaf) -> bool:
    for w in first.writes:
        if any(_overlap(w, x) for x in second.reads + second.writes):
            return True
    return any(_overlap(x, w) for x in first.reads for w in second.writes)


@dataclass(frozen=True)
class InsertSyncPass(ModulePass):
    """Insert tile.signal / tile.wait for every cross-engine dependency that other tokens do not imply.

    Kernel B's load below waits for kernel A's VPU (its tile %c reuses the SRAM bytes of %a, which
    the VPU reads) but not for A's store, which touches neither %c nor B's HBM buffers::

        tile.kernel "A" { ...; tile.unary %a, %b ...; tile.signal {engine = "vpu", sem = 52}
                          ...; tile.dma_store %b, %y ... }
        tile.kernel "B" { tile.wait {engine = "dma_load", sem = 52}; tile.dma_load %w, %c ... }

    Options (for ablations): `kernel_barriers` puts a barrier through a hub engine between
    consecutive kernels instead; `transitive=false` keeps every token except repeats of one engine
    pair.
    """

    name = "insert-sync"
    kernel_barriers: bool = False
    transitive: bool = True

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        """Synchronise each function's kernels: as one program, or kernel by kernel with barriers."""
        for function in op.body.block.ops:
            kernels = [k for k in function.walk() if isinstance(k, tile.KernelOp)]
            previous: tuple[tile.KernelOp, set[str]] | None = None
            for group in self._groups(kernels):
                engines = _Sync(group, self.transitive).run()
                if previous is not None:
                    _barrier(previous[0], previous[1], group[0], engines)
                previous = (group[-1], engines)

    def _groups(self, kernels: list[tile.KernelOp]) -> list[list[tile.KernelOp]]:
        """Runs of kernels synchronised as one program; a barrier separates runs."""
        if self.kernel_barriers:
            return [[k] for k in kernels]
        groups: list[list[tile.KernelOp]] = []
        joins = False
        for kernel in kernels:
            understood = all(isinstance(o, _MODELLED) for o in kernel.body.walk())
            if understood and joins:
                groups[-1].append(kernel)
            else:
                groups.append([kernel])
            joins = understood
        return groups


_MODELLED = (
    tile.SramBufferOp, tile.LoopOp, tile.DmaLoadOp, tile.DmaGatherOp, tile.DmaScatterOp, tile.DmaStoreOp,
    tile.MatmulOp, tile.UnaryOp, tile.ScalarOp, tile.ReduceOp, tile.BinaryOp, tile.SelectOp, tile.FillOp,
    tile.CausalMaskOp, tile.ExpSumOp, tile.RopeOp, tile.AllReduceOp, tile.LinkSendOp,
)  # fmt: skip
"""Ops whose every effect the analysis models (`leaf_of`): kernels with others, or with tokens already
placed, get barriers on both sides."""


class _Accesses:
    """The latest reads and writes of one engine by resource: the index of the op."""

    def __init__(self) -> None:
        self.spans: tuple[dict[object, _IntervalMax], dict[object, _IntervalMax]] = ({}, {})
        """Per kind (read, write): per memory (None for SRAM, else the HBM buffer's name) its byte ranges."""

    def record(self, leaf: Leaf, index: int) -> None:
        """`leaf`, the op at `index`, read and wrote its resources."""
        for kind, resources in ((0, leaf.reads), (1, leaf.writes)):
            for _, memory, start, end in resources:
                self.spans[kind].setdefault(memory, _IntervalMax()).paint(start, end, index)

    def latest_conflict(self, leaf: Leaf) -> int:
        """Index of the latest recorded op that conflicts with `leaf` (-1 if none)."""
        latest = -1
        for kind, resources in ((1, leaf.reads + leaf.writes), (0, leaf.writes)):
            for _, memory, start, end in resources:
                if (spans := self.spans[kind].get(memory)) is not None:
                    latest = max(latest, spans.query(start, end))
        return latest


class _IntervalMax:
    """Disjoint byte ranges, each holding the latest index painted over it."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.values: list[int] = []

    def paint(self, start: int, end: int, value: int) -> None:
        """Set [start, end) to `value` (values only grow)."""
        lo = bisect.bisect_right(self.ends, start)
        hi = lo
        while hi < len(self.starts) and self.starts[hi] < end:
            hi += 1
        pieces: list[tuple[int, int, int]] = []
        if lo < hi and self.starts[lo] < start:
            pieces.append((self.starts[lo], start, self.values[lo]))
        pieces.append((start, end, value))
        if lo < hi and self.ends[hi - 1] > end:
            pieces.append((end, self.ends[hi - 1], self.values[hi - 1]))
        self.starts[lo:hi] = [p[0] for p in pieces]
        self.ends[lo:hi] = [p[1] for p in pieces]
        self.values[lo:hi] = [p[2] for p in pieces]

    def query(self, start: int, end: int) -> int:
        """The latest value over [start, end) (-1 if none)."""
        latest = -1
        k = bisect.bisect_right(self.ends, start)
        while k < len(self.starts) and self.starts[k] < end:
            latest = max(latest, self.values[k])
            k += 1
        return latest


Decide = Callable[[int, dict[str, Clock], list[dict[str, Clock]]], None]


class _Sync:
    """Tokens for a run of kernels executed back to back (their top levels form one block)."""

    def __init__(self, kernels: list[tile.KernelOp], transitive: bool) -> None:
        self.transitive = transitive
        self.top = Block(None, 0)
        self.leaves: list[Leaf] = []
        self.bodies: list[tuple[Block, int, int]] = []  # post-order: (body, first leaf, end leaf)
        self.parents: dict[Block, tuple[Block, int]] = {}  # a loop body -> the block and item of its loop
        self.engines: set[str] = set()
        for kernel in kernels:
            self.engines |= self._collect(kernel.body.block.ops, self.top, [])
        self.needs: dict[Block, Needs] = {}
        self.forward: dict[Block, list[Token]] = {}
        self.forward_inside: dict[Block, set[Pair]] = {}  # pairs with forward tokens in nested loops
        self.carried_inside: dict[Block, set[Pair]] = {}  # pairs with carried tokens in nested loops
        self.summaries: dict[Block, Summary] = {}
        self.before: dict[Operation, list[list[Operation]]] = {}  # pre-signals, waits, carried waits
        self.after: dict[Operation, list[list[Operation]]] = {}  # carried signals, signals, drains
        self.leaf_of_op = {leaf.op: leaf for leaf in self.leaves}

    def _collect(self, ops: Iterable[Operation], block: Block, path: list[tuple[Block, int]]) -> set[str]:
        """Items and leaves of `ops` into `block`; the engines they use."""
        used: set[str] = set()
        for op in ops:
            if isinstance(op, tile.LoopOp):
                if op.count.value.data == 1:
                    used |= self._collect(op.body.block.ops, block, path)
                    continue
                body = Block(op, block.level + 1)
                index = block.add(op, frozenset(), body)
                self.parents[body] = (block, index)
                first = len(self.leaves)
                inner = self._collect(op.body.block.ops, body, [*path, (block, index)])
                block.engines[index] = frozenset(inner)
                self.bodies.append((body, first, len(self.leaves)))
                used |= inner
            elif (leaf := leaf_of(op)) is not None:
                leaf.path = [*path, (block, block.add(op, frozenset({leaf.engine})))]
                self.leaves.append(leaf)
                used.add(leaf.engine)
        return used

    def run(self) -> set[str]:
        """Insert the tokens, innermost loops first; the engines the kernels use."""
        self._forward_needs()
        for body, first, end in self.bodies:
            self._loop(body, first, end)
        self._place_forward(self.top, TOP)
        for anchor, slots in self.before.items():
            for new in [o for slot in slots for o in slot]:
                _insert_before(anchor, new)
        for anchor, slots in self.after.items():
            for new in reversed([o for slot in slots for o in slot]):
                _insert_after(anchor, new)
        return self.engines

    def _forward_needs(self) -> None:
        """For every op and other engine, the latest earlier op of that engine it conflicts with.

        The need is recorded in the innermost block holding both, between their items there.
        """
        accesses = {e: _Accesses() for e in ENGINES}
        for index, consumer in enumerate(self.leaves):
            for engine, table in accesses.items():
                latest = table.latest_conflict(consumer) if engine != consumer.engine else -1
                if latest < 0:
                    continue
                producer = self.leaves[latest]
                paths = zip(producer.path, consumer.path, strict=False)
                level = next(n for n, (a, b) in enumerate(paths) if a[1] != b[1])
                block, p = producer.path[level]
                by_engine = self.needs.setdefault(block, {}).setdefault(consumer.path[level][1], {})
                by_producer = by_engine.setdefault(consumer.engine, {})
                by_producer[engine] = max(by_producer.get(engine, -1), p)
            accesses[consumer.engine].record(consumer, index)

    def _loop(self, body: Block, first: int, end: int) -> None:
        """A rolled loop: forward tokens of one iteration, then the carried tokens they do not imply.

        Carried needs exist from the second iteration on; its clocks start from those at the end of
        the iteration before, item indices shifted by the body length n.
        """
        loop = body.loop
        assert loop is not None
        snapshots, end_clock = self._place_forward(body, FORWARD)
        n = len(body.items)
        start = {e: _shifted(clock, n) for e, clock in end_clock.items()}
        needs = self._carried_needs(body, first, end)
        tokens: list[Token] = []
        learnt: dict[int, list[tuple[str, Clock]]] = {}
        # One token per iteration (and engine pair) where a nested loop has carried tokens of the same
        # semaphore: it must enclose them, for first-in first-out matching. Without pruning: always.
        nested = {pair for pair in needs if any(b is not None and pair in self.carried_inside[b] for b in body.bodies)}
        if not self.transitive:
            nested = set(needs)
        clocks = self._replay(body, start, {})[0] if nested else []
        for producer, consumer in sorted(nested):
            by_x = needs[producer, consumer]
            unmet = [(x, p) for x, p in by_x.items() if not self.transitive or clocks[x][consumer][producer] < p - n]
            if not unmet:
                continue
            x, p = min(x for x, _ in unmet), max(p for _, p in unmet)
            for k, inner in enumerate(body.bodies):
                if inner is not None and (producer, consumer) in self.carried_inside[inner]:
                    x, p = min(x, k), max(p, k)
            tokens.append(Token(producer, consumer, x, p))
            learnt.setdefault(x, []).append((consumer, _shifted(snapshots[p][producer], n)))
        wants: Needs = {}
        for (producer, consumer), by_x in needs.items():
            for x, p in by_x.items() if (producer, consumer) not in nested else ():
                wants.setdefault(x, {}).setdefault(consumer, {})[producer] = p

        def decide(j: int, clock: dict[str, Clock]) -> None:
            for consumer in sorted(wants.get(j, {}), key=ENGINES.index):
                self._choose(j, consumer, wants[j][consumer], clock[consumer], snapshots, n, tokens)

        _, last_snapshots, final = self._replay(body, start, learnt, decide)
        for token in tokens:
            sem = semaphore(token.producer, token.consumer, CARRIED)
            self._at(self.after, body.items[token.p], 0).append(tile.SignalOp(token.producer, sem))
            self._at(self.before, body.items[token.x], 2).append(tile.WaitOp(token.consumer, sem))
            self._at(self.before, self._presignal_anchor(body, first, end, token), 0).append(
                tile.SignalOp(token.producer, sem)
            )
            self._at(self.after, loop, 2).append(tile.WaitOp(token.consumer, sem))
        pairs = {(token.producer, token.consumer) for token in tokens}
        self.carried_inside[body] = _union(self.carried_inside, body) | pairs
        if self.transitive:
            drained = {e: dict(clock) for e, clock in final.items()}
            for token in tokens:
                _merge(drained[token.consumer], last_snapshots[token.p][token.producer])
            last = {e: j for j, used in enumerate(body.engines) for e in used}
            self.summaries[body] = Summary(final, drained, last)

    def _presignal_anchor(self, body: Block, first: int, end: int, token: Token) -> Operation:
        """Where a carried token's pre-signal goes: before the loop, or earlier in its kernel over the
        items the producer engine does not use or uses without touching what the loop's consumer ops
        touch (a matmul's first K step, in tiles of its own, before its K loop): the producer then
        signals before that work instead of after it, and the loop's first iteration need not wait
        for it. It never moves past another loop (whose tokens may share its semaphore)."""
        loop = body.loop
        assert loop is not None
        parent, index = self.parents[body]
        kernel = _kernel_of(loop)
        consumers = [leaf for leaf in self.leaves[first:end] if leaf.engine == token.consumer]
        anchor: Operation = loop
        for item in reversed(parent.items[:index]):
            if isinstance(item, tile.LoopOp) or _kernel_of(item) is not kernel:
                break
            leaf = self.leaf_of_op.get(item)
            if leaf is None or (
                leaf.engine == token.producer and any(_conflict(leaf, c) or _conflict(c, leaf) for c in consumers)
            ):
                break
            anchor = item
        return anchor

    def _carried_needs(self, body: Block, first: int, end: int) -> dict[Pair, dict[int, int]]:
        """Per engine pair and consumer item: the latest item of the iteration before it depends on."""
        needs: dict[Pair, dict[int, int]] = {}
        for i in range(first, end):
            consumer = self.leaves[i]
            for producer in self.leaves[i + 1 : end]:
                if producer.engine == consumer.engine or not _conflict(producer, consumer):
                    continue
                p, x = producer.path[body.level][1], consumer.path[body.level][1]
                by_x = needs.setdefault((producer.engine, consumer.engine), {})
                by_x[x] = max(by_x.get(x, -1), p)
        return needs

    def _place_forward(self, block: Block, kind: int) -> tuple[list[dict[str, Clock]], dict[str, Clock]]:
        """Place the forward tokens of `block` in program order, leaving out those the clocks imply.

        The clocks start knowing nothing, so the tokens hold for every iteration of a loop body.
        Returns each item's snapshot (the clocks of its engines just after it) and the final clocks.
        """
        needs = self.needs.get(block, {})
        if kind == FORWARD:
            needs = self._avoid_nesting(block, needs)
        tokens = self.forward.setdefault(block, [])

        def decide(j: int, clock: dict[str, Clock], snapshots: list[dict[str, Clock]]) -> None:
            for consumer in sorted(needs.get(j, {}), key=ENGINES.index):
                self._choose(j, consumer, needs[j][consumer], clock[consumer], snapshots, 0, tokens)

        start = {e: dict.fromkeys(ENGINES, UNKNOWN) for e in ENGINES}
        snapshots, final = self._sweep(block, start, decide)
        for token in tokens:
            sem = semaphore(token.producer, token.consumer, kind)
            self._at(self.after, block.items[token.p], 1).append(tile.SignalOp(token.producer, sem))
            self._at(self.before, block.items[token.x], 1).append(tile.WaitOp(token.consumer, sem))
        pairs = {(token.producer, token.consumer) for token in tokens}
        self.forward_inside[block] = _union(self.forward_inside, block) | pairs
        return snapshots, final

    def _choose(
        self,
        j: int,
        consumer: str,
        wanted: dict[str, int],
        own: Clock,
        snapshots: list[dict[str, Clock]],
        shift: int,
        tokens: list[Token],
    ) -> None:
        """Tokens so that `consumer`, before item j, has seen each producer's work up to its wanted
        item (of the iteration `shift` items back: 0 or the body length); `own` is its clock.

        The producer whose token implies most of the others goes first. Each token is signalled right
        after the item it waits for (folding it into an earlier token of its pair, whose signal would
        move later, saves instructions but was measured slower: the consumer then waits for work,
        a whole matrix instruction say, it does not need).
        """
        pending = dict(wanted)
        while pending := {e: p for e, p in pending.items() if own[e] < p - shift}:
            producer = _most_implying(pending, snapshots)
            p = pending.pop(producer)
            tokens.append(Token(producer, consumer, j, p))
            if self.transitive:
                _merge(own, _shifted(snapshots[p][producer], shift))
            own[producer] = max(own[producer], p - shift)

    def _replay(
        self,
        block: Block,
        start: dict[str, Clock],
        learnt: dict[int, list[tuple[str, Clock]]],
        decide: Callable[[int, dict[str, Clock]], None] | None = None,
    ) -> tuple[list[dict[str, Clock]], list[dict[str, Clock]], dict[str, Clock]]:
        """Clocks through a block with its forward tokens placed, waits before item j that teach
        `learnt[j]` (engine, clock) and `decide(j, clocks)` adding more.

        Returns the clocks before each item (after its waits; without `decide` only), each item's
        snapshot and the final clocks.
        """
        forward: dict[int, list[Token]] = {}
        for token in self.forward.get(block, []):
            forward.setdefault(token.x, []).append(token)
        before: list[dict[str, Clock]] = []

        def apply(j: int, clock: dict[str, Clock], snapshots: list[dict[str, Clock]]) -> None:
            for token in forward.get(j, []):
                if self.transitive:
                    _merge(clock[token.consumer], snapshots[token.p][token.producer])
                clock[token.consumer][token.producer] = max(clock[token.consumer][token.producer], token.p)
            for consumer, clock_learnt in learnt.get(j, []):
                _merge(clock[consumer], clock_learnt)
            if decide is not None:
                decide(j, clock)
            else:
                before.append({e: dict(c) for e, c in clock.items()})

        snapshots, final = self._sweep(block, start, apply)
        return before, snapshots, final

    def _sweep(
        self, block: Block, start: dict[str, Clock], decide: Decide
    ) -> tuple[list[dict[str, Clock]], dict[str, Clock]]:
        """Vector clocks through `block`: `decide(j, clocks, snapshots)` applies the waits before item j.

        After a nested rolled loop, an engine that saw P's work in the loop's last iteration knows
        P's work before the loop and what P knew entering it, and all of P's loop work if it saw P's
        last item. Drain waits come after the loop's own signals, so count only for later items.
        """
        clock = {e: dict(c) for e, c in start.items()}
        snapshots: list[dict[str, Clock]] = []
        for j, engines in enumerate(block.engines):
            decide(j, clock, snapshots)
            entry = {e: dict(clock[e]) for e in engines}
            for engine in engines:
                clock[engine][engine] = j
            body = block.bodies[j]
            summary = self.summaries.get(body) if body is not None else None
            if summary is not None:
                _learn(clock, summary.known, summary.last, entry, j)
            snapshots.append({e: dict(clock[e]) for e in engines})
            if summary is not None:
                _learn(clock, summary.drained, summary.last, entry, j)
        return snapshots, clock

    def _avoid_nesting(self, block: Block, needs: Needs) -> Needs:
        """Move a wait up to a nested loop with tokens of its semaphore between its signal and it.

        Tokens of one semaphore are matched first in, first out: a token signalled before such a
        loop and waited for after it would be taken by the loop's first wait.
        """
        loops: dict[Pair, list[int]] = {}
        for k, body in enumerate(block.bodies):
            for pair in self.forward_inside[body] if body is not None else ():
                loops.setdefault(pair, []).append(k)
        moved: Needs = {}
        for j, by_consumer in needs.items():
            for consumer, by_producer in by_consumer.items():
                for producer, p in by_producer.items():
                    ks = loops.get((producer, consumer), [])
                    n = bisect.bisect_right(ks, p)
                    at = ks[n] if n < len(ks) and ks[n] < j else j
                    by_engine = moved.setdefault(at, {}).setdefault(consumer, {})
                    by_engine[producer] = max(by_engine.get(producer, -1), p)
        return moved

    @staticmethod
    def _at(where: dict[Operation, list[list[Operation]]], op: Operation, slot: int) -> list[Operation]:
        return where.setdefault(op, [[], [], []])[slot]


def _most_implying(pending: dict[str, int], snapshots: list[dict[str, Clock]]) -> str:
    """The producer whose snapshot at its wanted item implies most of the pending ones (then the latest)."""

    def score(engine: str) -> tuple[int, int]:
        known = snapshots[pending[engine]][engine]
        return sum(known[e] >= p for e, p in pending.items()), pending[engine]

    return max(sorted(pending, key=ENGINES.index), key=score)


def _merge(clock: Clock, other: Clock) -> None:
    for engine, index in other.items():
        if index > clock[engine]:
            clock[engine] = index


def _learn(
    clock: dict[str, Clock], known: dict[str, Clock], last: dict[str, int], entry: dict[str, Clock], k: int
) -> None:
    """What the loop's engines (`entry`) know after it, at item k, from its summary (see `_Sync._sweep`)."""
    for engine in entry:
        own, seen = clock[engine], known[engine]
        for producer, index in seen.items():
            if producer == engine or producer not in last or index <= UNKNOWN // 2:
                continue
            own[producer] = max(own[producer], k if index >= last[producer] else k - 1)
            _merge(own, entry[producer])


def _shifted(clock: Clock, n: int) -> Clock:
    """A clock of the iteration before (item indices minus the body length n)."""
    return {engine: index - n for engine, index in clock.items()}


def _union(inside: dict[Block, set[Pair]], block: Block) -> set[Pair]:
    """Engine pairs with tokens of one kind in the loops nested in `block`."""
    return set().union(*(inside[b] for b in block.bodies if b is not None))


def _insert_after(anchor: Operation, new: Operation) -> None:
    block = anchor.parent_block()
    assert block is not None
    block.insert_op_after(new, anchor)


def _insert_before(anchor: Operation, new: Operation) -> None:
    block = anchor.parent_block()
    assert block is not None
    block.insert_op_before(new, anchor)


def _barrier(prev: tile.KernelOp, prev_engines: set[str], kernel: tile.KernelOp, engines: set[str]) -> None:
    """`kernel` starts after `prev` (and all before it) has finished: a barrier through one hub engine.

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
