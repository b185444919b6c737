"""KernelBuilder: emits one tile.kernel with rolled loops and strided accesses.

Positions along a dimension are affine in the enclosing loop counters
(`Pos`), so every access can be stated once inside a rolled loop as an
offset plus one stride per loop. `tiled_range` emits a loop over the full
tiles of a dimension and one peeled copy of the body for the remainder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from math import prod

from xdsl.dialects.builtin import MemRefType
from xdsl.ir import Attribute, Block, Operation, SSAValue

from tasic.ir import tile
from tasic.passes.tiling.dtypes import element_bytes
from tasic.passes.tiling.views import View


class DoesNotFitError(Exception):
    """A kernel whose smallest working set exceeds the target's SRAM."""


@dataclass(frozen=True)
class Pos:
    """const + sum(coeffs[loop] * counter(loop)), loops numbered by nesting depth."""

    const: int = 0
    coeffs: tuple[tuple[int, int], ...] = ()

    def __add__(self, other: Pos) -> Pos:
        merged = dict(self.coeffs)
        for loop, coeff in other.coeffs:
            merged[loop] = merged.get(loop, 0) + coeff
        return Pos(self.const + other.const, tuple(sorted(merged.items())))

    def scaled(self, factor: int) -> Pos:
        """This position times an integer."""
        return Pos(self.const * factor, tuple((loop, c * factor) for loop, c in self.coeffs))

    def strides(self, depth: int) -> list[int]:
        """Per-loop coefficients, outermost loop first, for `depth` loops."""
        per_loop = dict(self.coeffs)
        return [per_loop.get(loop, 0) for loop in range(depth)]


LOAD_CHUNK_BYTES = 8 << 20
"""Largest DMA load one instruction carries (`KernelBuilder.load`)."""


@dataclass
class KernelBuilder:
    """Appends ops to one tile.kernel, tracking the open loops."""

    kernel: tile.KernelOp
    blocks: list[Block] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.blocks = [self.kernel.body.block]

    @property
    def depth(self) -> int:
        """Number of open tile.loop ops."""
        return len(self.blocks) - 1

    def add(self, op: Operation) -> Operation:
        """Append an op at the current insertion point."""
        self.blocks[-1].add_op(op)
        return op

    def sram(self, shape: tuple[int, ...], element_type: Attribute) -> SSAValue:
        """A new SRAM tile, declared at the top of the kernel."""
        op = tile.SramBufferOp(shape, element_type)
        block = self.kernel.body.block
        first = block.first_op
        while first is not None and isinstance(first, tile.SramBufferOp):
            first = first.next_op
        if first is None:
            block.add_op(op)
        else:
            block.insert_op_before(op, first)
        return op.result

    @contextmanager
    def loop(self, count: int) -> Iterator[Pos]:
        """Open a tile.loop; yields the position of its counter."""
        op = tile.LoopOp(count)
        self.add(op)
        self.blocks.append(op.body.block)
        try:
            yield Pos(0, ((self.depth - 1, 1),))
        finally:
            self.blocks.pop()

    def tiled_range(self, size: int, step: int, body: Callable[[Pos, int], None], base: Pos | None = None) -> None:
        """body(start, extent) over [0, size) in tiles of `step`: a rolled loop plus a remainder."""
        base = base or Pos()
        full, rest = divmod(size, step)
        if full == 1:
            body(base, step)
        elif full > 1:
            with self.loop(full) as counter:
                body(base + counter.scaled(step), step)
        if rest:
            body(base + Pos(full * step), rest)

    def access(self, view: View, starts: list[Pos]) -> tuple[int, list[int]]:
        """Element offset and per-loop strides of the view's element at `starts`."""
        offset = view.offset + sum(p.const * s for p, s in zip(starts, view.strides, strict=True))
        loop_strides = [0] * self.depth
        for p, s in zip(starts, view.strides, strict=True):
            for index, coeff in enumerate(p.strides(self.depth)):
                loop_strides[index] += coeff * s
        return offset, loop_strides

    def load(self, view: View, starts: list[Pos], rows: int, cols: int, dest: SSAValue, sram_at: int | Pos = 0) -> None:
        """DMA the [rows, cols] window at `starts` (last two dims) into an SRAM tile, from element `sram_at` on.

        A weight window of more than LOAD_CHUNK_BYTES is loaded in chunks of rows: the HBM channel
        then fits them into the gaps other engines' transfers leave, instead of waiting for one gap as
        long as the whole window (a 64 MiB weight prefetched during attention would otherwise wait
        for every smaller transfer of the attention queued on the channel).
        """
        sram = sram_at if isinstance(sram_at, Pos) else Pos(sram_at)
        hbm_bytes = rows * cols * element_bytes(view.buffer.type.element_type)  # type: ignore[attr-defined]
        owner = view.buffer.owner
        weight = isinstance(owner, tile.HbmBufferOp) and owner.kind.data == "weight"
        if weight and hbm_bytes > LOAD_CHUNK_BYTES and rows > 1:
            step = max(1, rows * LOAD_CHUNK_BYTES // hbm_bytes)
            for r0 in range(0, rows, step):
                at = [*starts[:-2], starts[-2] + Pos(r0), starts[-1]]
                self._load(view, at, min(step, rows - r0), cols, dest, sram + Pos(r0 * cols))
            return
        self._load(view, starts, rows, cols, dest, sram)

    def _load(self, view: View, starts: list[Pos], rows: int, cols: int, dest: SSAValue, sram: Pos) -> None:
        offset, loop_strides = self.access(view, starts)
        row_stride, col_stride = _last_two_strides(view)
        self.add(
            tile.DmaLoadOp(
                view.buffer,
                dest,
                rows,
                cols,
                offset,
                (row_stride, col_stride),
                loop_strides,
                sram.const,
                sram.strides(self.depth),
            )
        )

    def store(
        self,
        source: SSAValue,
        view: View,
        starts: list[Pos],
        rows: int,
        cols: int,
        sram_at: int | Pos = 0,
        over_links: bool = False,
    ) -> None:
        """DMA an SRAM tile (from element `sram_at` on) into the [rows, cols] window at `starts` of a view;
        `over_links` sends it to the next pipeline stage's chip instead (tile.link_send)."""
        offset, loop_strides = self.access(view, starts)
        row_stride, col_stride = _last_two_strides(view)
        sram = sram_at if isinstance(sram_at, Pos) else Pos(sram_at)
        self.add(
            (tile.LinkSendOp if over_links else tile.DmaStoreOp)(
                source,
                view.buffer,
                rows,
                cols,
                offset,
                (row_stride, col_stride),
                loop_strides,
                sram.const,
                sram.strides(self.depth),
            )
        )

    def for_each_tile(
        self, shape: tuple[int, ...], tile_rows: int, tile_cols: int, body: Callable[[list[Pos], int, int], None]
    ) -> None:
        """body(starts, rows, cols) over every tile of a shape (rank >= 2: outer dims loop one by one)."""

        def outer(dim: int, starts: list[Pos]) -> None:
            if dim == len(shape) - 2:
                self.tiled_range(
                    shape[-2],
                    tile_rows,
                    lambda r, nr: self.tiled_range(shape[-1], tile_cols, lambda c, nc: body([*starts, r, c], nr, nc)),
                )
                return
            if shape[dim] == 1:
                outer(dim + 1, [*starts, Pos()])
                return
            with self.loop(shape[dim]) as counter:
                outer(dim + 1, [*starts, counter])

        outer(0, [])


def _last_two_strides(view: View) -> tuple[int, int]:
    if len(view.shape) < 2:
        raise ValueError("kernels address views of rank >= 2")
    return view.strides[-2], view.strides[-1]


def as_matrix_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape with leading 1s added up to rank 2."""
    return (1,) * max(0, 2 - len(shape)) + tuple(shape)


def fit_rows(per_row_bytes: int, fixed_bytes: int, budget: int, max_rows: int, what: str) -> int:
    """Largest row count <= max_rows whose tiles fit the SRAM budget (the target's SRAM)."""
    rows = min(max_rows, (budget - fixed_bytes) // max(per_row_bytes, 1))
    if rows < 1:
        need = fixed_bytes + per_row_bytes
        raise DoesNotFitError(f"{what} needs {need} bytes of SRAM for one row of tiles; the target has {budget} bytes")
    return rows


def fit_tile(max_rows: int, max_cols: int, bytes_per_element: int, budget: int, what: str) -> tuple[int, int]:
    """Largest (rows, cols) tile, columns halved first, whose elements fit the budget."""
    cols = max_cols
    while cols > 1 and cols * bytes_per_element > budget:
        cols = -(-cols // 2)
    rows = fit_rows(cols * bytes_per_element, 0, budget, max_rows, what)
    return rows, cols


def tile_bytes(memref: MemRefType) -> int:
    """Bytes of an SRAM tile type."""
    return prod(memref.get_shape()) * element_bytes(memref.element_type)
