"""plan-sram: give every SRAM tile of a kernel a byte offset, checking capacity.

Each kernel's tiles are placed one after another, 64-byte aligned, in declaration order, at the
lowest address whose bytes the last RECENT_KERNELS kernels do not use (or, when SRAM is too small
for that, the last fewer ones): a kernel that shares no bytes with the kernels just before it does
not wait for them (insert-sync), so its DMA can run ahead while they compute. When the whole kernel
cannot keep clear, its prefetch tiles still may: those a weight is loaded into before any loop
(a weight loaded once, e.g. a whole o_proj) are placed first, on their own, clear of the previous
kernel (just after or before one of its ranges, or at either end of SRAM: the highest such place
that leaves the rest of the kernel room), so the weight streams in while the previous kernel
computes. Highest, so that prefetch tiles gather at the top and leave the largest hole below for
the next kernel's: Llama-3-70B's down_proj (163 MiB) keeps its first weight tile at the top, and the
next q/k/v's 80 MiB weight then fits between them and streams in during down_proj. Before::

    %a = tile.sram {offset = -1 : i64} : memref<16x32xf32, "sram">
    %b = tile.sram {offset = -1 : i64} : memref<16x1xf32, "sram">

After::

    %a = tile.sram {offset = 0 : i64} : memref<16x32xf32, "sram">
    %b = tile.sram {offset = 2048 : i64} : memref<16x1xf32, "sram">
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.passes import ModulePass

from tasic.backend.target import load_target
from tasic.ir import tile
from tasic.passes.tiling.builder import DoesNotFitError, tile_bytes

ALIGN = 64


@dataclass(frozen=True)
class PlanSramPass(ModulePass):
    """Place each kernel's SRAM tiles; fail clearly when they exceed the target's SRAM."""

    name = "plan-sram"
    target: str = "tiny"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        """Assign offsets kernel by kernel."""
        capacity = load_target(self.target).sram.bytes
        recent: list[list[tuple[int, int]]] = []  # [start, end) ranges of the latest kernels, newest first
        for kernel in (k for k in op.walk() if isinstance(k, tile.KernelOp)):
            recent = [_place(kernel, capacity, recent), *recent][:RECENT_KERNELS]


RECENT_KERNELS = 4
"""Kernels whose SRAM bytes a new kernel avoids when it can."""


def _aligned(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def _clear_starts(total: int, capacity: int, avoid: list[tuple[int, int]]) -> list[int]:
    """Starts of `total` bytes clear of the `avoid` ranges, lowest first: at either end of SRAM or just
    after or before a range (the lowest clear start of all is always among them)."""
    edges = {0, capacity - total, *(hi for _, hi in avoid), *(lo - total for lo, _ in avoid)}
    aligned = {edge // ALIGN * ALIGN for edge in edges if edge >= 0}
    return [
        start
        for start in sorted(aligned)
        if start + total <= capacity and all(start + total <= lo or start >= hi for lo, hi in avoid)
    ]


def _clear_of_most(
    total: int, capacity: int, recent: list[list[tuple[int, int]]], own: list[tuple[int, int]]
) -> tuple[list[int], int]:
    """The starts of `total` bytes clear of `own` and of the ranges of as many of the newest `recent`
    kernels as allow one, and how many that is; ([], 0) if none."""
    for keep in range(len(recent), -1, -1):
        starts = _clear_starts(total, capacity, [*own, *(r for ranges in recent[:keep] for r in ranges)])
        if starts:
            return starts, keep
    return [], 0


def _prefetched(kernel: tile.KernelOp) -> set[tile.SramBufferOp]:
    """Tiles a weight is loaded into at the kernel's top level, before any loop."""
    tiles = set()
    for op in kernel.body.block.ops:
        if isinstance(op, tile.LoopOp):
            break
        if isinstance(op, tile.DmaLoadOp):
            hbm, sram = op.source.owner, op.dest.owner
            if isinstance(hbm, tile.HbmBufferOp) and hbm.kind.data == "weight" and isinstance(sram, tile.SramBufferOp):
                tiles.add(sram)
    return tiles


def _bytes(buffers: list[tile.SramBufferOp]) -> int:
    return sum(_aligned(tile_bytes(b.result.type)) for b in buffers)


def _place(kernel: tile.KernelOp, capacity: int, recent: list[list[tuple[int, int]]]) -> list[tuple[int, int]]:
    """Place the kernel's tiles (its prefetch tiles apart when the whole kernel cannot keep clear of
    the previous one); return the byte ranges it uses."""
    buffers = [b for b in kernel.body.block.ops if isinstance(b, tile.SramBufferOp)]
    starts, kept = _clear_of_most(_bytes(buffers), capacity, recent, [])
    prefetched = _prefetched(kernel)
    if starts and kept == 0 and recent and prefetched:
        groups = [[b for b in buffers if b in prefetched], [b for b in buffers if b not in prefetched]]
        sizes = (_bytes(groups[0]), _bytes(groups[1]))
        for first in reversed(_clear_starts(sizes[0], capacity, recent[0])):  # clear of the previous kernel
            ranges = [(first, first + sizes[0])]
            rest = _clear_of_most(sizes[1], capacity, recent, ranges)[0]
            if rest:
                _assign(kernel, groups[0], first, capacity)
                _assign(kernel, groups[1], rest[0], capacity)
                return [*ranges, (rest[0], rest[0] + sizes[1])]
    start = starts[0] if starts else 0
    _assign(kernel, buffers, start, capacity)
    return [(start, start + _bytes(buffers))]


def _assign(kernel: tile.KernelOp, buffers: list[tile.SramBufferOp], start: int, capacity: int) -> None:
    """Offsets one after another from `start`; DoesNotFitError names the first tile past the capacity."""
    for buffer in buffers:
        size = tile_bytes(buffer.result.type)
        if start + size > capacity:
            raise DoesNotFitError(
                f"kernel '{kernel.loc.data}': SRAM tile {buffer.result.name_hint or 'buffer'} of {size} bytes "
                f"at offset {start} exceeds the target's {capacity} bytes of SRAM"
            )
        buffer.properties["offset"] = IntegerAttr(start, i64)
        start += _aligned(size)
