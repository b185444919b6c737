"""Static instruction costs and the engine scheduler of the timing model (docs/isa.md, Timing)."""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from collections.abc import Callable

from tasic.backend.isa_spec import (
    DTYPE_BYTES,
    DTYPE_NAMES,
    NUM_SEMAPHORES,
    TRANSCENDENTAL,
    Engine,
    Instr,
    Op,
    matmul_batch,
)
from tasic.backend.target import Target

NUM_ENGINES = len(Engine)
# Kinds of pre-decoded instructions; engine kinds come last (see program.py).
K_HALT, K_ADDI, K_LOOP, K_ENDLOOP, K_SIGNAL, K_WAIT, K_DMA, K_COMPUTE = range(8)

Operands = tuple[int, int, int, int]
Runner = Callable[[Operands], None]  # the data effect of one instruction, given its operand addresses
# Per instruction, what the scheduler needs: engine, kind, cycles, semaphore, runner (None: no data effect).
Slot = tuple[int, int, int, int, Runner | None]
TraceRecord = tuple[int, int, int, int]  # engine, start, end, static instruction index


ROPE_PASSES = 3
"""Simple-class passes vpu.rope makes over the rotated columns (two products and a sum per element, as
the op sequence it replaces: mul, mul, sub on one half and mul, mul, add on the other)."""


def mxu_cycles(target: Target, instr: Instr) -> int:
    """SCALE-Sim output-stationary cycles of one MXU_MATMUL (KeyError: no rate for dt_a)."""
    mxu = target.mxu
    folds = math.ceil(instr.rows / mxu.rows) * math.ceil(instr.cols / mxu.cols) * matmul_batch(instr)
    sequential = math.ceil(folds / mxu.count)
    stream = math.ceil(instr.depth / mxu.rate[DTYPE_NAMES[instr.dt_a]])
    fill_drain = mxu.rows + mxu.cols - 2
    if mxu.pipelined:
        return sequential * stream + fill_drain
    return sequential * (stream + fill_drain)


def vpu_cycles(target: Target, instr: Instr) -> int:
    """Cycles of one VPU instruction: lane groups times the cost of its class, plus latency."""
    vpu = target.vpu
    if (instr.opcode == Op.VPU_UNARY and instr.func in TRANSCENDENTAL) or instr.opcode == Op.VPU_EXP_SUM:
        cost = vpu.cost["transcendental"]
    elif instr.opcode == Op.VPU_REDUCE:
        cost = vpu.cost["reduce"]
    elif instr.opcode == Op.VPU_ROPE:
        return rope_cycles(target, instr)
    else:
        cost = vpu.cost["simple"]
    return math.ceil(instr.rows * instr.cols / vpu.lanes) * cost + vpu.latency


def rope_cycles(target: Target, instr: Instr) -> int:
    """vpu.rope: ROPE_PASSES simple passes over the rotated columns, one more over the others unless the
    instruction works in place (they are left as they are)."""
    vpu, rotated = target.vpu, instr.rows * instr.depth
    in_place = (instr.reg_d, instr.off_d, instr.dt_d) == (instr.reg_a, instr.off_a, instr.dt_a)
    copied = 0 if in_place else instr.rows * (instr.cols - instr.depth)
    passes = ROPE_PASSES * math.ceil(rotated / vpu.lanes) + math.ceil(copied / vpu.lanes)
    return passes * vpu.cost["simple"] + vpu.latency


def link_bytes(instr: Instr) -> int:
    """Bytes one chip sends in an all-reduce: a reduce-scatter and an all-gather, (chips - 1) / chips each."""
    chips = instr.depth
    return 2 * (chips - 1) * instr.rows * instr.cols * DTYPE_BYTES[instr.dt_a] // chips if chips > 1 else 0


def link_cycles(target: Target, instr: Instr) -> int:
    """Cycles of one LINK_ALLREDUCE: two link latencies (reduce-scatter, all-gather) plus the bytes at link rate."""
    if instr.depth <= 1:
        return 1
    return 2 * target.links.latency + math.ceil(link_bytes(instr) / target.link_bytes_per_cycle)


def send_bytes(instr: Instr) -> int:
    """Bytes one LINK_SEND carries to the next chip: the tile in the destination (HBM) dtype."""
    return instr.rows * instr.cols * DTYPE_BYTES[instr.dt_d]


def send_cycles(target: Target, instr: Instr) -> int:
    """Cycles of one LINK_SEND: one link latency plus the bytes at one peer's share of the link rate."""
    return target.links.latency + math.ceil(send_bytes(instr) / target.peer_link_bytes_per_cycle)


def dma_bytes(instr: Instr) -> int:
    """HBM bytes one DMA instruction moves."""
    hbm_dt = instr.dt_d if instr.opcode in (Op.DMA_STORE, Op.DMA_SCATTER) else instr.dt_a
    return instr.rows * instr.cols * DTYPE_BYTES[hbm_dt]


def dma_cycles(target: Target, instr: Instr) -> int:
    """Cycles one DMA instruction occupies the shared HBM channel."""
    return math.ceil(dma_bytes(instr) / target.hbm_bytes_per_cycle)


class Channel:
    """The HBM channel shared by all DMA: booked intervals; a transfer takes the first gap that fits."""

    def __init__(self) -> None:
        self.busy: list[tuple[int, int]] = []  # sorted, disjoint [start, end)

    def book(self, ready: int, cycles: int, horizon: int) -> int:
        """Reserve `cycles` at or after `ready`; return the start. Drops intervals ending before `horizon`."""
        busy = self.busy
        drop = 0
        while drop < len(busy) and busy[drop][1] <= horizon:
            drop += 1
        if drop:
            del busy[:drop]
        if not busy or busy[-1][1] <= ready:
            busy.append((ready, ready + cycles))
            return ready
        start = ready
        for lo, hi in busy:
            if hi <= start:
                continue
            if lo >= start + cycles:
                break
            start = hi
        bisect.insort(busy, (start, start + cycles))
        return start


class Scheduler:
    """Per-engine in-order queues, the HBM channel and semaphores.

    Instructions are processed in program order except that an engine blocked on a `wait`
    holds its later instructions until a `signal` supplies a token. An instruction's runner,
    when it has one, performs its data effects at the moment it is processed.
    """

    def __init__(self, latency: int, slots: list[Slot], trace_limit: int) -> None:
        self.latency = latency
        self.slots = slots
        self.free = [0] * NUM_ENGINES  # when the engine may start its next instruction
        self.done = [0] * NUM_ENGINES  # when all its work so far has completed
        self.queues: list[deque[tuple[int, int, Operands]]] = [deque() for _ in range(NUM_ENGINES)]
        self.tokens: list[list[int]] = [[] for _ in range(NUM_SEMAPHORES)]
        self.waiters: list[deque[int]] = [deque() for _ in range(NUM_SEMAPHORES)]
        self.woken: deque[int] = deque()
        self.channel = Channel()
        self.trace_limit = trace_limit
        self.events: list[TraceRecord] = []
        self.trace_truncated = False

    def issue(self, pc: int, dispatch: int, ops: Operands) -> None:
        """Hand a dispatched engine instruction to its engine's queue."""
        queue = self.queues[self.slots[pc][0]]
        if queue or not self._run(pc, dispatch, ops):
            queue.append((pc, dispatch, ops))
        elif self.woken:
            self._resume()

    def blocked(self) -> list[tuple[int, int]]:
        """(engine, instruction index of its blocking wait) for every engine still blocked."""
        return [(engine, queue[0][0]) for engine, queue in enumerate(self.queues) if queue]

    def total_cycles(self) -> int:
        """Completion time of the last piece of work on any engine."""
        return max(self.done)

    def _resume(self) -> None:
        while self.woken:
            queue = self.queues[self.woken.popleft()]
            while queue:
                pc, dispatch, ops = queue[0]
                if not self._run(pc, dispatch, ops):
                    break
                queue.popleft()

    def _run(self, pc: int, dispatch: int, ops: Operands) -> bool:
        """Time (and execute) one instruction; False if it is a wait that must block."""
        engine, kind, cycles, sem, runner = self.slots[pc]
        free, done = self.free, self.done
        start = free[engine]
        if dispatch > start:
            start = dispatch
        if kind == K_COMPUTE:
            end = free[engine] = done[engine] = start + cycles
        elif kind == K_DMA:
            other = free[Engine.DMA_STORE if engine == Engine.DMA_LOAD else Engine.DMA_LOAD]
            start = self.channel.book(start, cycles, start if start < other else other)
            end = free[engine] = start + cycles
            if end + self.latency > done[engine]:
                done[engine] = end + self.latency
        elif kind == K_SIGNAL:
            start = end = start if start > done[engine] else done[engine]
            heapq.heappush(self.tokens[sem], end)
            if self.waiters[sem]:
                self.woken.append(self.waiters[sem].popleft())
        else:  # K_WAIT
            tokens = self.tokens[sem]
            if not tokens:
                self.waiters[sem].append(engine)
                return False
            end = free[engine] = max(start, heapq.heappop(tokens))
            done[engine] = max(done[engine], end)
        if runner is not None:
            runner(ops)
        if self.trace_limit:
            if len(self.events) < self.trace_limit:
                self.events.append((engine, start, end, pc))
            else:
                self.trace_truncated = True
        return True
