"""plan-sram: give every SRAM tile of a kernel a byte offset, checking capacity.

Each kernel's tiles are placed one after another, 64-byte aligned, in declaration order: from
address 0 in even kernels, and ending at the top of SRAM in odd ones, so that consecutive kernels
use different bytes when they fit together and insert-sync lets them overlap. Before::

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
        for index, kernel in enumerate(k for k in op.walk() if isinstance(k, tile.KernelOp)):
            _place(kernel, capacity, from_top=index % 2 == 1)


def _place(kernel: tile.KernelOp, capacity: int, from_top: bool) -> None:
    buffers = [b for b in kernel.body.block.ops if isinstance(b, tile.SramBufferOp)]
    total = sum(-(-tile_bytes(b.result.type) // ALIGN) * ALIGN for b in buffers)
    address = (capacity - total) // ALIGN * ALIGN if from_top and total <= capacity else 0
    for buffer in kernel.body.block.ops:
        if not isinstance(buffer, tile.SramBufferOp):
            continue
        size = tile_bytes(buffer.result.type)
        if address + size > capacity:
            raise DoesNotFitError(
                f"kernel '{kernel.loc.data}': SRAM tile {buffer.result.name_hint or 'buffer'} of {size} bytes "
                f"at offset {address} exceeds the target's {capacity} bytes of SRAM"
            )
        buffer.properties["offset"] = IntegerAttr(address, i64)
        address += -(-size // ALIGN) * ALIGN
