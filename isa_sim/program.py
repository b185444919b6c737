"""Pre-decoding: validate a code section once and turn it into flat tuples for the walker."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from tasic.backend.isa_spec import (
    DTYPE_NAMES,
    NUM_REGS,
    NUM_SEMAPHORES,
    OPCODE_ENGINE,
    BinaryFn,
    Broadcast,
    DType,
    Engine,
    Instr,
    Op,
    ReduceFn,
    UnaryFn,
    matmul_batch,
)
from tasic.backend.target import Target
from tasic.isa_sim.errors import SimError
from tasic.isa_sim.memory import extent
from tasic.isa_sim.timing import (
    K_ADDI,
    K_COMPUTE,
    K_DMA,
    K_ENDLOOP,
    K_HALT,
    K_LOOP,
    K_SIGNAL,
    K_WAIT,
    Operands,
    dma_bytes,
    dma_cycles,
    link_bytes,
    link_cycles,
    mxu_cycles,
    send_bytes,
    send_cycles,
    vpu_cycles,
)

MNEMONICS = {
    Op.HALT: "halt",
    Op.ADDI: "addi",
    Op.LOOP: "loop",
    Op.ENDLOOP: "endloop",
    Op.SIGNAL: "signal",
    Op.WAIT: "wait",
    Op.DMA_LOAD: "dma.load",
    Op.DMA_STORE: "dma.store",
    Op.DMA_GATHER: "dma.gather",
    Op.DMA_SCATTER: "dma.scatter",
    Op.MXU_MATMUL: "mxu.matmul",
    Op.VPU_UNARY: "vpu.unary",
    Op.VPU_BINARY: "vpu.binary",
    Op.VPU_SCALAR: "vpu.scalar",
    Op.VPU_REDUCE: "vpu.reduce",
    Op.VPU_SELECT: "vpu.select",
    Op.VPU_EXP_SUM: "vpu.expsum",
    Op.VPU_ROPE: "vpu.rope",
    Op.VPU_FILL: "vpu.fill",
    Op.VPU_CAUSAL: "vpu.causal",
    Op.LINK_ALLREDUCE: "link.allreduce",
    Op.LINK_SEND: "link.send",
}
_FUNCS: dict[int, type[IntEnum]] = {
    Op.VPU_UNARY: UnaryFn,
    Op.VPU_BINARY: BinaryFn,
    Op.VPU_SCALAR: BinaryFn,
    Op.VPU_REDUCE: ReduceFn,
}
# Function names by opcode and code, for labels (plain dicts: decoding avoids slow Enum calls).
_FUNC_NAMES = {op: {fn.value: fn.name.lower() for fn in enum} for op, enum in _FUNCS.items()}
_CTRL_KINDS = {Op.HALT: K_HALT, Op.ADDI: K_ADDI, Op.LOOP: K_LOOP, Op.ENDLOOP: K_ENDLOOP}
DMA_OPS = (Op.DMA_LOAD, Op.DMA_STORE, Op.DMA_GATHER, Op.DMA_SCATTER)
INDEXED_OPS = (Op.DMA_GATHER, Op.DMA_SCATTER)

# Operand slots of the resolved address tuple: reg_d+off_d, reg_a+off_a, reg_b+off_b, reg_c+imm.
D, A, B, C = range(4)
# A bounds check: operand slot, byte range [lo, hi) around its address, memory size, is SRAM, is a write.
Check = tuple[int, int, int, int, bool, bool]
# The registers and offsets of the four operands: reg_d, off_d, reg_a, off_a, reg_b, off_b, reg_c, imm.
Regs = tuple[int, int, int, int, int, int, int, int]
# A pre-decoded instruction: kind, engine, cycles, semaphore or imm64, the operand addresses when every
# register is r0 (else None), the registers and offsets, and the bounds checks left for run time (those
# of register-relative operands, and fixed operands that are out of bounds).
Step = tuple[int, int, int, int, Operands | None, Regs, tuple[Check, ...]]


Region = tuple[int, int, str]
"""An HBM tensor of the binary: start byte, end byte, symbol name."""


@dataclass(frozen=True)
class Program:
    """A validated code section with per-instruction static costs."""

    code: list[Instr]
    steps: list[Step]
    labels: list[str]  # mnemonic plus function / semaphore, for reports and traces
    busy: list[int]  # engine cycles per execution (channel cycles for DMA)
    macs: list[int]  # MXU multiply-accumulates per execution
    mac_slots: list[float]  # MACs at the MXU's rate for the dtype: MACs / rate (fp8 counts half)
    link_bytes: list[int]  # chip-to-chip bytes sent per execution
    hbm_bytes: list[int]  # HBM bytes moved per execution
    sram_written: int  # instructions can write SRAM bytes [0, sram_written) only
    regions: tuple[Region, ...] = ()  # the binary's HBM tensors, by address

    def region_of(self, address: int) -> Region | None:
        """The HBM tensor (start, end, name) holding byte `address`, if any."""
        index = bisect.bisect_right(self.regions, (address, float("inf"))) - 1
        if index >= 0 and self.regions[index][0] <= address < self.regions[index][1]:
            return self.regions[index]
        return None

    def describe(self, pc: int) -> str:
        """`instruction N (mnemonic)` for error messages."""
        return f"instruction {pc} ({MNEMONICS[Op(self.code[pc].opcode)]})"

    def bounds_error(self, pc: int, base: int, check: Check) -> SimError:
        """The error of a failed bounds check of instruction `pc` whose operand address is `base`."""
        _, lo, hi, size, in_sram, write = check
        memory = "SRAM" if in_sram else "HBM"
        return SimError(
            f"{self.describe(pc)}: {memory} {'write' if write else 'read'} of bytes [{base + lo}, {base + hi})"
            f" is outside {memory} ({size:,} bytes)"
        )


def decode(code: list[Instr], target: Target, hbm_size: int, sram_size: int, regions: Sequence[Region] = ()) -> Program:
    """Validate every instruction and pre-compute its kind, cost and bounds checks; `regions` are the
    HBM tensors (start, end, name) a gather or scatter must stay within."""
    steps: list[Step] = []
    labels, busy, macs, moved = [], [], [], []
    slots: list[float] = []
    sent: list[int] = []
    sram_written = 0
    open_loops: list[int] = []
    for pc, instr in enumerate(code):
        try:
            step, label, write_end = _decode_one(instr, target, hbm_size, sram_size)
        except (ValueError, KeyError) as err:
            raise SimError(f"instruction {pc}: invalid {_mnemonic(instr)}: {err}") from None
        if step[0] == K_LOOP:
            open_loops.append(pc)
        elif step[0] == K_ENDLOOP and not open_loops:
            raise SimError(f"instruction {pc} (endloop): no loop is open")
        elif step[0] == K_ENDLOOP:
            open_loops.pop()
        steps.append(step)
        labels.append(label)
        sram_written = max(sram_written, write_end)
        op = instr.opcode
        busy.append(step[2] if step[0] >= K_DMA else 0)
        macs.append(instr.rows * instr.cols * instr.depth * matmul_batch(instr) if op == Op.MXU_MATMUL else 0)
        slots.append(macs[-1] / target.mxu.rate[DTYPE_NAMES[instr.dt_a]] if op == Op.MXU_MATMUL else 0.0)
        sent.append(link_bytes(instr) if op == Op.LINK_ALLREDUCE else send_bytes(instr) if op == Op.LINK_SEND else 0)
        moved.append(dma_bytes(instr) if step[0] == K_DMA else 0)
    if open_loops:
        raise SimError(f"instruction {open_loops[-1]} (loop): no matching endloop")
    return Program(code, steps, labels, busy, macs, slots, sent, moved, sram_written, tuple(sorted(regions)))


def _mnemonic(instr: Instr) -> str:
    return MNEMONICS.get(instr.opcode, f"opcode 0x{instr.opcode:02x}")


def _decode_one(instr: Instr, target: Target, hbm_size: int, sram_size: int) -> tuple[Step, str, int]:
    """One Step, its label and the end of the SRAM bytes it may write; ValueError / KeyError say what is wrong."""
    op = Op(instr.opcode)
    name = MNEMONICS[op]
    for reg in (instr.reg_d, instr.reg_a, instr.reg_b, instr.reg_c):
        if reg >= NUM_REGS:
            raise ValueError(f"register r{reg} does not exist")
    regs: Regs = (instr.reg_d, instr.off_d, instr.reg_a, instr.off_a, instr.reg_b, instr.off_b, instr.reg_c, instr.imm)
    fixed = None if any(regs[0::2]) else (instr.off_d, instr.off_a, instr.off_b, instr.imm)
    if op in _CTRL_KINDS:
        arg = instr.imm64 if op in (Op.ADDI, Op.LOOP) else 0
        if op == Op.LOOP and arg < 1:
            raise ValueError(f"loop count {arg} is below 1")
        return (_CTRL_KINDS[op], int(Engine.CTRL), 0, arg, fixed, regs, ()), name, 0
    engine = int(Engine(instr.func) if op in (Op.SIGNAL, Op.WAIT) else OPCODE_ENGINE[op])
    if op in (Op.SIGNAL, Op.WAIT):
        if engine == Engine.CTRL:
            raise ValueError("the sequencer (CTRL) cannot signal or wait")
        if not 0 <= instr.imm < NUM_SEMAPHORES:
            raise ValueError(f"semaphore s{instr.imm} does not exist")
        kind = K_SIGNAL if op == Op.SIGNAL else K_WAIT
        return (kind, engine, 0, instr.imm, fixed, regs, ()), f"{name} s{instr.imm}", 0
    for dt in (instr.dt_d, instr.dt_a, instr.dt_b):
        if dt not in DTYPE_NAMES:
            raise ValueError(f"{dt} is not a valid DType")
    label = name
    if op in _FUNCS:
        if instr.func not in _FUNC_NAMES[op]:
            raise ValueError(f"{instr.func} is not a valid {_FUNCS[op].__name__}")
        label = f"{name} {_FUNC_NAMES[op][instr.func]}"
    if op in INDEXED_OPS and instr.dt_b not in (DType.I32, DType.I64):
        raise ValueError(f"{name.split('.')[1]} indices must be i32 or i64, not {DTYPE_NAMES[instr.dt_b]}")
    if op == Op.VPU_BINARY:
        Broadcast(instr.broadcast)
    if op == Op.MXU_MATMUL and DTYPE_NAMES[instr.dt_a] not in target.mxu.rate:
        raise ValueError(f"target {target.name} has no MXU rate for {DTYPE_NAMES[instr.dt_a]}")
    every_check = _checks(instr, hbm_size, sram_size)
    checks = tuple(check for check in every_check if _needed(check, regs))
    write_end = max((_write_end(check, regs) for check in every_check if check[4] and check[5]), default=0)
    if op in DMA_OPS:
        return (K_DMA, engine, dma_cycles(target, instr), 0, fixed, regs, checks), label, write_end
    if op == Op.LINK_ALLREDUCE:
        if instr.depth < 1 or instr.depth > target.chips:
            raise ValueError(
                f"an all-reduce over {instr.depth} chips does not fit target {target.name} ({target.chips})"
            )
        return (K_COMPUTE, engine, link_cycles(target, instr), 0, fixed, regs, checks), label, write_end
    if op == Op.LINK_SEND:  # on the LINK engine, not the HBM channel: it writes the next chip's HBM
        if target.peer_link_bytes_per_cycle <= 0:
            raise ValueError(f"target {target.name} has no chip-to-chip link bandwidth")
        return (K_COMPUTE, engine, send_cycles(target, instr), 0, fixed, regs, checks), label, write_end
    cycles = mxu_cycles(target, instr) if op == Op.MXU_MATMUL else vpu_cycles(target, instr)
    return (K_COMPUTE, engine, cycles, 0, fixed, regs, checks), label, write_end


def _needed(check: Check, regs: Regs) -> bool:
    """False for a check of a fixed (r0-relative) operand that passes: it cannot fail at run time."""
    slot, lo, hi, size, _, _ = check
    reg, off = regs[2 * slot], regs[2 * slot + 1]
    return reg != 0 or off + lo < 0 or off + hi > size


def _write_end(check: Check, regs: Regs) -> int:
    """End of the bytes a write may touch: all of its memory when the address is register-relative."""
    slot, _, hi, size, _, _ = check
    reg, off = regs[2 * slot], regs[2 * slot + 1]
    return size if reg else min(off + hi, size)


def _checks(instr: Instr, hbm: int, sram: int) -> list[Check]:
    """Bounds checks of every operand the instruction addresses (gather / scatter table rows are checked when run)."""
    op, rows, cols, depth = instr.opcode, instr.rows, instr.cols, instr.depth
    if rows * cols == 0:
        return []

    def dense(slot: int, r: int, c: int, dt: int, write: bool) -> Check:
        return (slot, *extent(r, c, c, 1, dt), sram, True, write)

    if op == Op.DMA_LOAD:
        hbm_src = (A, *extent(rows, cols, instr.off_b, instr.imm, instr.dt_a), hbm, False, False)
        return [dense(D, rows, cols, instr.dt_d, True), hbm_src]
    if op in (Op.DMA_STORE, Op.LINK_SEND):  # link.send: the next chip's buffer, modelled in this HBM
        hbm_dst = (D, *extent(rows, cols, instr.off_b, instr.imm, instr.dt_d), hbm, False, True)
        return [hbm_dst, dense(A, rows, cols, instr.dt_a, False)]
    if op == Op.DMA_GATHER:
        return [dense(D, rows, cols, instr.dt_d, True), (B, *extent(rows, 1, 1, 1, instr.dt_b), hbm, False, False)]
    if op == Op.DMA_SCATTER:
        return [dense(A, rows, cols, instr.dt_a, False), (B, *extent(rows, 1, 1, 1, instr.dt_b), hbm, False, False)]
    if op == Op.MXU_MATMUL:
        batch = matmul_batch(instr)
        if depth == 0:
            return [dense(D, rows * batch, cols, instr.dt_d, True)]
        return [
            dense(D, rows * batch, cols, instr.dt_d, True),
            dense(A, rows * batch, depth, instr.dt_a, False),
            dense(B, depth * batch, cols, instr.dt_b, False),
        ]
    if op == Op.VPU_BINARY:
        b_shape = {Broadcast.NONE: (rows, cols), Broadcast.ROW: (rows, 1), Broadcast.COL: (1, cols)}[instr.broadcast]
        return [
            dense(D, rows, cols, instr.dt_d, True),
            dense(A, rows, cols, instr.dt_a, False),
            dense(B, *b_shape, instr.dt_b, False),
        ]
    if op == Op.VPU_REDUCE:
        return [dense(D, rows, 1, instr.dt_d, True), dense(A, rows, cols, instr.dt_a, False)]
    if op == Op.VPU_SELECT:
        return [
            dense(D, rows, cols, instr.dt_d, True),
            dense(A, rows, cols, instr.dt_a, False),
            dense(B, rows, cols, instr.dt_b, False),
            dense(C, rows, cols, DType.BOOL, False),
        ]
    if op == Op.VPU_EXP_SUM:
        return [
            dense(D, rows, cols, instr.dt_d, True),
            dense(A, rows, cols, instr.dt_a, False),
            dense(B, rows, 1, instr.dt_b, False),
            dense(C, rows, 1, DType.F32, True),
        ]
    if op == Op.VPU_ROPE:
        return [
            dense(D, rows, cols, instr.dt_d, True),
            dense(A, rows, cols, instr.dt_a, False),
            dense(B, 2 * rows, instr.imm, instr.dt_b, False),
        ]
    if op in (Op.VPU_UNARY, Op.VPU_SCALAR, Op.LINK_ALLREDUCE):
        return [dense(D, rows, cols, instr.dt_d, True), dense(A, rows, cols, instr.dt_a, False)]
    return [dense(D, rows, cols, instr.dt_d, True)]  # fill, causal
