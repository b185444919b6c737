"""Run a TBinary on the ISA simulator: functional execution plus the cycle model of docs/isa.md."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tasic.backend.isa_spec import NUM_REGS, Engine
from tasic.backend.target import Target
from tasic.backend.tbin import TBinary
from tasic.isa_sim.errors import SimError
from tasic.isa_sim.functional import Executor
from tasic.isa_sim.memory import prepare_input, read_symbol, write_symbol
from tasic.isa_sim.program import Program, decode
from tasic.isa_sim.report import Report, make_report
from tasic.isa_sim.timing import K_ADDI, K_ENDLOOP, K_LOOP, K_SIGNAL, Scheduler

TRACE_LIMIT = 200_000


@dataclass
class SimResult:
    """Outputs read back from HBM (empty in timing-only mode) and the timing report."""

    outputs: dict[str, np.ndarray]
    report: Report


def simulate(
    binary: TBinary,
    target: Target,
    inputs: dict[str, np.ndarray] | None = None,
    *,
    timing_only: bool = False,
    trace: bool = False,
    entry: str = "main",
) -> SimResult:
    """Execute `binary` from entry point `entry` on `target`; raises SimError.

    With `timing_only` no memory is allocated and no data is computed (inputs are
    optional and only checked); the cycle count is the same as with full simulation.
    With `trace`, the report carries up to TRACE_LIMIT per-instruction events.
    """
    _check_target(binary, target)
    hbm_size = _hbm_size(binary, target)
    sram_needed = int(binary.metadata.get("sram_bytes", 0))
    if sram_needed > target.sram.bytes:
        raise SimError(f"program needs {sram_needed:,} bytes of SRAM, target {target.name} has {target.sram.bytes:,}")
    prepared = _prepare_inputs(binary, inputs, required=not timing_only)
    if entry not in binary.entry_points:
        raise SimError(f"unknown entry point '{entry}' (have: {', '.join(sorted(binary.entry_points))})")
    program = decode(binary.code, target, hbm_size, target.sram.bytes)
    hbm: np.ndarray | None = None
    executor = None
    if not timing_only:
        hbm = np.zeros(hbm_size, np.uint8)
        hbm[: len(binary.constants)] = np.frombuffer(binary.constants, np.uint8)
        for name, value in prepared.items():
            write_symbol(hbm, binary.symbol(name), value)
        executor = Executor(program, hbm, np.zeros(target.sram.bytes, np.uint8))
    scheduler = Scheduler(target, program.steps, executor, TRACE_LIMIT if trace else 0)
    with np.errstate(all="ignore"):  # inf and nan results are IEEE behaviour, not errors
        counts = _walk(program, binary.entry_points[entry], scheduler, target.issue_per_cycle)
    blocked = scheduler.blocked()
    if blocked:
        engine, pc = blocked[0]
        raise SimError(
            f"deadlock: {Engine(engine).name} is stuck at {program.describe(pc)} on semaphore"
            f" s{program.steps[pc][3]}, which no instruction signals any more"
        )
    report = make_report(
        target,
        program,
        counts,
        scheduler.total_cycles(),
        binary.metadata,
        scheduler.events,
        scheduler.trace_truncated,
    )
    outputs = {} if hbm is None else {sym.name: read_symbol(hbm, sym) for sym in binary.symbols_of_kind("output")}
    return SimResult(outputs, report)


def simulate_timing(binary: TBinary, target: Target, *, trace: bool = False, entry: str = "main") -> Report:
    """Timing only: the report of `simulate(..., timing_only=True)`."""
    return simulate(binary, target, timing_only=True, trace=trace, entry=entry).report


def _check_target(binary: TBinary, target: Target) -> None:
    if binary.target_name != target.name:
        raise SimError(f"binary was compiled for target '{binary.target_name}', not '{target.name}'")
    if binary.target_hash != target.hash:
        raise SimError(
            f"binary was compiled for a different version of target '{binary.target_name}' (target file hash differs)"
        )


def _hbm_size(binary: TBinary, target: Target) -> int:
    """HBM bytes the program needs, checked against the target and the binary's contents."""
    size = int(binary.metadata.get("hbm_bytes", 0))
    if not size:
        size = max([len(binary.constants), *(sym.address + sym.nbytes for sym in binary.symbols)])
    if size > target.hbm.bytes:
        raise SimError(f"program needs {size:,} bytes of HBM, target {target.name} has {target.hbm.bytes:,}")
    if len(binary.constants) > size:
        raise SimError(f"constants image ({len(binary.constants):,} bytes) is larger than HBM ({size:,} bytes)")
    for sym in binary.symbols:
        if sym.address < 0 or sym.address + sym.nbytes > size:
            raise SimError(f"symbol '{sym.name}' lies outside HBM ({size:,} bytes)")
    return size


def _prepare_inputs(binary: TBinary, inputs: dict[str, np.ndarray] | None, required: bool) -> dict[str, np.ndarray]:
    """Inputs checked against the input symbols and converted to their dtypes."""
    expected = {sym.name: sym for sym in binary.symbols_of_kind("input")}
    if inputs is None and not required:
        return {}
    given = inputs or {}
    missing = sorted(set(expected) - set(given))
    if missing:
        raise SimError(f"missing input(s): {', '.join(missing)}")
    extra = sorted(set(given) - set(expected))
    if extra:
        raise SimError(f"unknown input(s): {', '.join(extra)} (expected: {', '.join(sorted(expected)) or 'none'})")
    return {name: prepare_input(expected[name], value) for name, value in given.items()}


def _walk(program: Program, pc: int, scheduler: Scheduler, per_cycle: int) -> list[int]:
    """Run the sequencer from `pc` to HALT; returns how often each instruction was dispatched."""
    steps = program.steps
    counts = [0] * len(steps)
    regs = [0] * NUM_REGS
    loops: list[list[int]] = []  # [first instruction of the body, iterations left]
    issue = scheduler.issue
    n = 0
    while True:
        if not 0 <= pc < len(steps):
            raise SimError(f"execution ran off the end of the code at instruction {pc} without halt")
        kind, _, _, arg, rd, od, ra, oa, rb, ob, rc, oc, checks = steps[pc]
        counts[pc] += 1
        if kind >= K_SIGNAL:
            ops = (regs[rd] + od, regs[ra] + oa, regs[rb] + ob, regs[rc] + oc)
            for slot, lo, hi, size, in_sram, write in checks:
                base = ops[slot]
                if base + lo < 0 or base + hi > size:
                    access = ("SRAM " if in_sram else "HBM ") + ("write" if write else "read")
                    raise SimError(
                        f"{program.describe(pc)}: {access} of bytes [{base + lo}, {base + hi})"
                        f" is outside {'SRAM' if in_sram else 'HBM'} ({size:,} bytes)"
                    )
            issue(pc, n // per_cycle, ops)
        elif kind == K_ADDI:
            if rd:
                regs[rd] = regs[ra] + arg
        elif kind == K_LOOP:
            loops.append([pc + 1, arg])
        elif kind == K_ENDLOOP:
            if not loops:
                raise SimError(f"{program.describe(pc)}: no loop is open")
            loops[-1][1] -= 1
            if loops[-1][1]:
                pc = loops[-1][0]
                n += 1
                continue
            loops.pop()
        else:  # K_HALT
            return counts
        n += 1
        pc += 1
