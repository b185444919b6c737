"""plan-sram: give every SRAM tile of a kernel a byte offset, checking capacity.

Each kernel's tiles are placed one after another, 64-byte aligned, in declaration order, at the
lowest address whose bytes the last RECENT_KERNELS kernels do not use (or, when SRAM is too small
for that, the last fewer ones): a kernel that shares no bytes with the kernels just before it does
not wait for them (insert-sync), so its DMA can run ahead while they compute. Before::

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
        recent: list[tuple[int, int]] = []  # [start, end) of the latest kernels, newest first
        for kernel in (k for k in op.walk() if isinstance(k, tile.KernelOp)):
            start, end = _place(kernel, capacity, recent)
            recent = [(start, end), *recent][:RECENT_KERNELS]


RECENT_KERNELS = 4
"""Kernels whose SRAM bytes a new kernel avoids when it can."""


def _aligned(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def _start(total: int, capacity: int, recent: list[tuple[int, int]]) -> int:
    """The lowest start of `total` bytes clear of as many of the newest `recent` kernels as fit."""
    for keep in range(len(recent), 0, -1):
        avoid = recent[:keep]
        for start in sorted({0, *(end for _, end in avoid)}):
            if start + total <= capacity and all(start + total <= lo or start >= hi for lo, hi in avoid):
                return start
    return 0


def _place(kernel: tile.KernelOp, capacity: int, recent: list[tuple[int, int]]) -> tuple[int, int]:
    buffers = [b for b in kernel.body.block.ops if isinstance(b, tile.SramBufferOp)]
    total = sum(_aligned(tile_bytes(b.result.type)) for b in buffers)
    start = address = _start(total, capacity, recent)
    for buffer in buffers:
        size = tile_bytes(buffer.result.type)
        if address + size > capacity:
            raise DoesNotFitError(
                f"kernel '{kernel.loc.data}': SRAM tile {buffer.result.name_hint or 'buffer'} of {size} bytes "
                f"at offset {address} exceeds the target's {capacity} bytes of SRAM"
            )
        buffer.properties["offset"] = IntegerAttr(address, i64)
        address += _aligned(size)
    return start, start + total
