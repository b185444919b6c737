"""Pre-decoding: validate a code section once and turn it into flat tuples for the walker."""

from __future__ import annotations

from dataclasses import dataclass

from tasic.backend.isa_spec import (
    DTYPE_NAMES,
    NUM_REGS,
    NUM_SEMAPHORES,
    BinaryFn,
    Broadcast,
    DType,
    Engine,
    Instr,
    Op,
    ReduceFn,
    UnaryFn,
    engine_of,
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
    dma_bytes,
    dma_cycles,
    mxu_cycles,
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
    Op.MXU_MATMUL: "mxu.matmul",
    Op.VPU_UNARY: "vpu.unary",
    Op.VPU_BINARY: "vpu.binary",
    Op.VPU_SCALAR: "vpu.scalar",
    Op.VPU_REDUCE: "vpu.reduce",
    Op.VPU_SELECT: "vpu.select",
    Op.VPU_FILL: "vpu.fill",
    Op.VPU_CAUSAL: "vpu.causal",
}
_FUNCS: dict[int, type] = {
    Op.VPU_UNARY: UnaryFn,
    Op.VPU_BINARY: BinaryFn,
    Op.VPU_SCALAR: BinaryFn,
    Op.VPU_REDUCE: ReduceFn,
}
_CTRL_KINDS = {Op.HALT: K_HALT, Op.ADDI: K_ADDI, Op.LOOP: K_LOOP, Op.ENDLOOP: K_ENDLOOP}

# Operand slots of the resolved address tuple: reg_d+off_d, reg_a+off_a, reg_b+off_b, reg_c+imm.
D, A, B, C = range(4)
# A bounds check: operand slot, byte range [lo, hi) around its address, memory size, is SRAM, is a write.
Check = tuple[int, int, int, int, bool, bool]
# A pre-decoded instruction: kind, engine, cycles, semaphore or imm64, reg_d, off_d, reg_a, off_a,
# reg_b, off_b, reg_c, imm, bounds checks.
Step = tuple[int, int, int, int, int, int, int, int, int, int, int, int, tuple[Check, ...]]


@dataclass(frozen=True)
class Program:
    """A validated code section with per-instruction static costs."""

    code: list[Instr]
    steps: list[Step]
    labels: list[str]  # mnemonic plus function / semaphore, for reports and traces
    busy: list[int]  # engine cycles per execution (channel cycles for DMA)
    macs: list[int]  # MXU multiply-accumulates per execution
    hbm_bytes: list[int]  # HBM bytes moved per execution

    def describe(self, pc: int) -> str:
        """`instruction N (mnemonic)` for error messages."""
        return f"instruction {pc} ({MNEMONICS[Op(self.code[pc].opcode)]})"


def decode(code: list[Instr], target: Target, hbm_size: int, sram_size: int) -> Program:
    """Validate every instruction and pre-compute its kind, cost and bounds checks."""
    steps: list[Step] = []
    labels, busy, macs, moved = [], [], [], []
    open_loops: list[int] = []
    for pc, instr in enumerate(code):
        try:
            step, label = _decode_one(instr, target, hbm_size, sram_size)
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
        op = instr.opcode
        busy.append(step[2] if step[0] >= K_DMA else 0)
        macs.append(instr.rows * instr.cols * instr.depth if op == Op.MXU_MATMUL else 0)
        moved.append(dma_bytes(instr) if step[0] == K_DMA else 0)
    if open_loops:
        raise SimError(f"instruction {open_loops[-1]} (loop): no matching endloop")
    return Program(code, steps, labels, busy, macs, moved)


def _mnemonic(instr: Instr) -> str:
    return MNEMONICS.get(instr.opcode, f"opcode 0x{instr.opcode:02x}")


def _decode_one(instr: Instr, target: Target, hbm_size: int, sram_size: int) -> tuple[Step, str]:
    """One Step and its label; ValueError / KeyError describe what is wrong."""
    op = Op(instr.opcode)
    name = MNEMONICS[op]
    for reg in (instr.reg_d, instr.reg_a, instr.reg_b, instr.reg_c):
        if reg >= NUM_REGS:
            raise ValueError(f"register r{reg} does not exist")
    regs = (instr.reg_d, instr.off_d, instr.reg_a, instr.off_a, instr.reg_b, instr.off_b, instr.reg_c, instr.imm)
    if op in _CTRL_KINDS:
        arg = instr.imm64 if op in (Op.ADDI, Op.LOOP) else 0
        if op == Op.LOOP and arg < 1:
            raise ValueError(f"loop count {arg} is below 1")
        return (_CTRL_KINDS[op], int(Engine.CTRL), 0, arg, *regs, ()), name
    engine = int(engine_of(instr))
    if op in (Op.SIGNAL, Op.WAIT):
        if engine == Engine.CTRL:
            raise ValueError("the sequencer (CTRL) cannot signal or wait")
        if not 0 <= instr.imm < NUM_SEMAPHORES:
            raise ValueError(f"semaphore s{instr.imm} does not exist")
        kind = K_SIGNAL if op == Op.SIGNAL else K_WAIT
        return (kind, engine, 0, instr.imm, *regs, ()), f"{name} s{instr.imm}"
    for dt in (instr.dt_d, instr.dt_a, instr.dt_b):  # unknown codes raise ValueError
        DType(dt)
    label = name
    if op in _FUNCS:
        label = f"{name} {_FUNCS[op](instr.func).name.lower()}"
    if op == Op.DMA_GATHER and instr.dt_b not in (DType.I32, DType.I64):
        raise ValueError("gather indices must be i32 or i64")
    if op == Op.VPU_BINARY:
        Broadcast(instr.broadcast)
    if op == Op.MXU_MATMUL and DTYPE_NAMES[DType(instr.dt_a)] not in target.mxu.rate:
        raise ValueError(f"target {target.name} has no MXU rate for {DTYPE_NAMES[DType(instr.dt_a)]}")
    checks = tuple(_checks(instr, hbm_size, sram_size))
    if op in (Op.DMA_LOAD, Op.DMA_STORE, Op.DMA_GATHER):
        return (K_DMA, engine, dma_cycles(target, instr), 0, *regs, checks), label
    cycles = mxu_cycles(target, instr) if op == Op.MXU_MATMUL else vpu_cycles(target, instr)
    return (K_COMPUTE, engine, cycles, 0, *regs, checks), label


def _checks(instr: Instr, hbm: int, sram: int) -> list[Check]:
    """Bounds checks of every operand the instruction addresses (the gather table is checked when run)."""
    op, rows, cols, depth = instr.opcode, instr.rows, instr.cols, instr.depth
    if rows * cols == 0:
        return []

    def dense(slot: int, r: int, c: int, dt: int, write: bool) -> Check:
        return (slot, *extent(r, c, c, 1, dt), sram, True, write)

    if op == Op.DMA_LOAD:
        hbm_src = (A, *extent(rows, cols, instr.off_b, instr.imm, instr.dt_a), hbm, False, False)
        return [dense(D, rows, cols, instr.dt_d, True), hbm_src]
    if op == Op.DMA_STORE:
        hbm_dst = (D, *extent(rows, cols, instr.off_b, instr.imm, instr.dt_d), hbm, False, True)
        return [hbm_dst, dense(A, rows, cols, instr.dt_a, False)]
    if op == Op.DMA_GATHER:
        return [dense(D, rows, cols, instr.dt_d, True), (B, *extent(rows, 1, 1, 1, instr.dt_b), hbm, False, False)]
    if op == Op.MXU_MATMUL:
        if depth == 0:
            return [dense(D, rows, cols, instr.dt_d, True)]
        return [
            dense(D, rows, cols, instr.dt_d, True),
            dense(A, rows, depth, instr.dt_a, False),
            dense(B, depth, cols, instr.dt_b, False),
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
    if op in (Op.VPU_UNARY, Op.VPU_SCALAR):
        return [dense(D, rows, cols, instr.dt_d, True), dense(A, rows, cols, instr.dt_a, False)]
    return [dense(D, rows, cols, instr.dt_d, True)]  # fill, causal
