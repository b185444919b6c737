"""Run a TBinary on the ISA simulator: functional execution plus the cycle model of docs/isa.md.

`Machine` keeps HBM between runs, so that several entry points of one binary (LLM prefill and
decode) can share a KV cache; `simulate` is one run on a fresh machine. docs/simulator.md has the details.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tasic.backend.isa_spec import NUM_REGS, Engine
from tasic.backend.target import Target
from tasic.backend.tbin import Symbol, TBinary, TbinError, check_entry_io
from tasic.isa_sim.errors import SimError
from tasic.isa_sim.functional import bind, bind_chips, bind_index_checks
from tasic.isa_sim.memory import Memory, SparseMemory, prepare_value, read_symbol, write_symbol
from tasic.isa_sim.program import Program, decode
from tasic.isa_sim.report import Report, make_report
from tasic.isa_sim.timing import K_ADDI, K_ENDLOOP, K_LOOP, K_SIGNAL, Scheduler

TRACE_LIMIT = 200_000

# An entry point's inputs and outputs: user-facing name -> symbol.
EntryIO = tuple[dict[str, Symbol], dict[str, Symbol]]


@dataclass
class SimResult:
    """Outputs read back from HBM (empty in timing-only mode) and the timing report."""

    outputs: dict[str, np.ndarray]
    report: Report


class Machine:
    """A target chip with `binary` loaded; raises SimError.

    HBM persists between runs: the constants image is loaded and every `kv` symbol zeroed once, when
    the machine is made. Each `run` starts with zeroed SRAM, registers and semaphores at cycle 0.
    A timing-only machine computes no data: its HBM is sparse, zero except what `write` and run
    inputs store (the constants are not loaded), and gather / scatter read their indices from it
    only to check the table rows.

    A tensor-parallel binary (metadata `chips` > 1) runs on that many chips in lock step, each with
    its own HBM (its weight shards) and SRAM; `link.allreduce` sums across them. Callers see whole
    tensors: sharded inputs are split over the chips and sharded outputs joined. Chips are
    symmetric, so timing is chip 0's.
    """

    def __init__(self, binary: TBinary, target: Target, *, timing_only: bool = False) -> None:
        _check_target(binary, target)
        if binary.metadata.get("timing_only") and not timing_only:
            raise SimError("this binary was compiled without weights (timing only): simulate it with --timing-only")
        hbm_size = _hbm_size(binary, target)
        sram_needed = int(binary.metadata.get("sram_bytes", 0))
        if sram_needed > target.sram.bytes:
            raise SimError(
                f"program needs {sram_needed:,} bytes of SRAM, target {target.name} has {target.sram.bytes:,}"
            )
        self.binary = binary
        self.target = target
        self.timing_only = timing_only
        self.chips = int(binary.metadata.get("chips", 1))
        if self.chips > target.chips:
            raise SimError(f"program runs on {self.chips} chips, target {target.name} has {target.chips}")
        self._shards: dict[str, tuple[int, int]] = {
            name: (int(dim), int(parts)) for name, (dim, parts) in binary.metadata.get("shards", {}).items()
        }
        self._symbols = {sym.name: sym for sym in binary.symbols}
        self._entries = _entry_io(binary)
        self._default_io = (
            {sym.name: sym for sym in binary.symbols_of_kind("input")},
            {sym.name: sym for sym in binary.symbols_of_kind("output")},
        )
        regions = [(sym.address, sym.address + sym.nbytes, sym.name) for sym in binary.symbols]
        self._program = decode(binary.code, target, hbm_size, target.sram.bytes, regions)
        self._hbms: list[Memory]
        self._srams: list[np.ndarray] = []
        if timing_only:
            self._hbms = [SparseMemory(hbm_size)]
            runners = bind_index_checks(self._program, self._hbms[0], hbm_size)
        else:
            image = np.zeros(hbm_size, np.uint8)
            image[: len(binary.constants)] = np.frombuffer(binary.constants, np.uint8)
            for sym in binary.symbols_of_kind("kv"):
                image[sym.address : sym.address + sym.nbytes] = 0
            hbms = [image] + [image.copy() for _ in range(1, self.chips)]
            for chip in range(1, self.chips):
                for sym, data in binary.chip_constants(chip):
                    hbms[chip][sym.address : sym.address + sym.nbytes] = np.frombuffer(data, np.uint8)
            self._hbms = list(hbms)
            self._srams = [np.zeros(target.sram.bytes, np.uint8) for _ in range(self.chips)]
            if self.chips == 1:
                runners = bind(self._program, hbms[0], self._srams[0])
            else:
                runners = bind_chips(self._program, hbms, self._srams)
        self._slots = [
            (step[1], step[0], step[2], step[3], runner)
            for step, runner in zip(self._program.steps, runners, strict=True)
        ]

    def run(
        self, entry: str = "main", inputs: dict[str, np.ndarray] | None = None, *, trace: bool = False
    ) -> SimResult:
        """Execute from entry point `entry` to HALT and read its outputs.

        `inputs` are keyed by the entry's input names (metadata["entries"], else the `input` symbols);
        a timing-only machine does not need them. With `trace`, the report carries up to TRACE_LIMIT
        per-instruction events.
        """
        pc = self._entry_pc(entry)
        expected, outputs = self._io(entry)
        if inputs is not None or not self.timing_only:
            prepared = _prepare_inputs(expected, inputs or {}, self.whole)
            for name, value in prepared.items():
                self._store(expected[name], value)
        for sram in self._srams:
            sram[: self._program.sram_written] = 0
        program = self._program
        scheduler = Scheduler(self.target.hbm.latency, self._slots, TRACE_LIMIT if trace else 0)
        with np.errstate(all="ignore"):  # inf and nan results are IEEE behaviour, not errors
            counts = _walk(program, pc, scheduler, self.target.issue_per_cycle)
        blocked = scheduler.blocked()
        if blocked:
            engine, pc = blocked[0]
            raise SimError(
                f"deadlock: {Engine(engine).name} is stuck at {program.describe(pc)} on semaphore"
                f" s{program.steps[pc][3]}, which no instruction signals any more"
            )
        report = make_report(
            self.target,
            program,
            counts,
            scheduler.total_cycles(),
            self.binary.metadata,
            scheduler.events,
            scheduler.trace_truncated,
        )
        if self.timing_only:
            return SimResult({}, report)
        return SimResult({name: self._load(sym) for name, sym in outputs.items()}, report)

    def read(self, symbol_name: str) -> np.ndarray:
        """A copy of the symbol's (whole) tensor in HBM (bf16 and f8 as float32, bool as bool)."""
        return self._load(self._symbol(symbol_name))

    def write(self, symbol_name: str, array: np.ndarray) -> None:
        """Store `array` (checked against the symbol's whole shape and dtype) at the symbol's HBM address."""
        sym = self._symbol(symbol_name)
        self._store(sym, prepare_value(self.whole(sym), array, f"symbol '{symbol_name}'"))

    def whole(self, sym: Symbol) -> Symbol:
        """The symbol as callers see it: a sharded one with its dim times the chips."""
        shard = self._shards.get(sym.name)
        if shard is None:
            return sym
        shape = list(sym.shape)
        shape[shard[0]] *= shard[1]
        return Symbol(sym.name, sym.kind, sym.address, tuple(shape), sym.dtype)

    def _store(self, sym: Symbol, value: np.ndarray) -> None:
        """Write a prepared whole tensor: every chip's part, or the same tensor to every chip."""
        shard = self._shards.get(sym.name)
        parts = np.split(value, shard[1], axis=shard[0]) if shard else [value] * len(self._hbms)
        for hbm, part in zip(self._hbms, parts, strict=False):
            write_symbol(hbm, sym, part)

    def _load(self, sym: Symbol) -> np.ndarray:
        shard = self._shards.get(sym.name)
        if shard is None or len(self._hbms) == 1:
            return read_symbol(self._hbms[0], sym)
        return np.concatenate([read_symbol(hbm, sym) for hbm in self._hbms], axis=shard[0])

    def _symbol(self, name: str) -> Symbol:
        if name not in self._symbols:
            raise SimError(f"unknown symbol '{name}'")
        return self._symbols[name]

    def _entry_pc(self, entry: str) -> int:
        points = self.binary.entry_points
        if entry not in points:
            raise SimError(f"unknown entry point '{entry}' (have: {', '.join(sorted(points))})")
        pc = points[entry]
        if not 0 <= pc < len(self._program.steps):
            raise SimError(f"entry point '{entry}' = {pc} is not an instruction index")
        return pc

    def _io(self, entry: str) -> EntryIO:
        """The entry's inputs and outputs: from metadata["entries"] (none for an entry it does not list),
        else every `input` and every `output` symbol by symbol name."""
        if self._entries is None:
            return self._default_io
        return self._entries.get(entry, ({}, {}))


def simulate(
    binary: TBinary,
    target: Target,
    inputs: dict[str, np.ndarray] | None = None,
    *,
    timing_only: bool = False,
    trace: bool = False,
    entry: str = "main",
) -> SimResult:
    """Execute `binary` from entry point `entry` on a fresh `Machine`; raises SimError.

    With `timing_only` no data is computed (inputs are optional and only checked); the cycle
    count is the same as with full simulation. With `trace`, the report carries up to
    TRACE_LIMIT per-instruction events.
    """
    return Machine(binary, target, timing_only=timing_only).run(entry, inputs, trace=trace)


def simulate_timing(binary: TBinary, target: Target, *, trace: bool = False, entry: str = "main") -> Report:
    """Timing only: the report of `simulate(..., timing_only=True)`."""
    return simulate(binary, target, timing_only=True, trace=trace, entry=entry).report


def _check_target(binary: TBinary, target: Target) -> None:
    if binary.target_name != target.name:
        raise SimError(
            f"binary was compiled for target '{binary.target_name}', not '{target.name}'"
            f" (run it with --target {binary.target_name}, or the .toml file it was compiled with)"
        )
    if binary.target_hash != target.hash:
        raise SimError(
            f"binary was compiled for a different version of target '{binary.target_name}' (target file hash"
            " differs): give the .toml file it was compiled with (--target FILE.toml), or recompile"
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


def _entry_io(binary: TBinary) -> dict[str, EntryIO] | None:
    """The inputs and outputs of each entry point described by metadata["entries"], or None without it."""
    if "entries" not in binary.metadata:
        return None
    try:
        check_entry_io(binary)
    except TbinError as err:
        raise SimError(str(err)) from None
    entries: dict[str, EntryIO] = {}
    for entry, spec in binary.metadata["entries"].items():
        inputs = {name: binary.symbol(symbol) for name, symbol in spec.get("inputs", {}).items()}
        outputs = {name: binary.symbol(symbol) for name, symbol in spec.get("outputs", {}).items()}
        entries[entry] = (inputs, outputs)
    return entries


def _prepare_inputs(
    expected: dict[str, Symbol], given: dict[str, np.ndarray], whole: Callable[[Symbol], Symbol]
) -> dict[str, np.ndarray]:
    """Inputs checked against their symbols and converted to their dtypes."""
    missing = sorted(set(expected) - set(given))
    if missing:
        raise SimError(f"missing input(s): {', '.join(missing)}")
    extra = sorted(set(given) - set(expected))
    if extra:
        raise SimError(f"unknown input(s): {', '.join(extra)} (expected: {', '.join(sorted(expected)) or 'none'})")
    return {name: prepare_value(whole(expected[name]), value, f"input '{name}'") for name, value in given.items()}


def _walk(program: Program, pc: int, scheduler: Scheduler, per_cycle: int) -> list[int]:
    """Run the sequencer from `pc` to HALT; returns how often each instruction was dispatched."""
    steps = program.steps
    end = len(steps)
    counts = [0] * end
    regs = [0] * NUM_REGS
    loops: list[list[int]] = []  # [first instruction of the body, iterations left]
    issue = scheduler.issue
    n = 0
    while True:
        if pc >= end:
            raise SimError(f"execution ran off the end of the code at instruction {pc} without halt")
        kind, _, _, arg, ops, operands, checks = steps[pc]
        counts[pc] += 1
        if kind >= K_SIGNAL:
            if ops is None:
                rd, od, ra, oa, rb, ob, rc, oc = operands
                ops = (regs[rd] + od, regs[ra] + oa, regs[rb] + ob, regs[rc] + oc)
            if checks:
                for check in checks:
                    base = ops[check[0]]
                    if base + check[1] < 0 or base + check[2] > check[3]:
                        raise program.bounds_error(pc, base, check)
            issue(pc, n // per_cycle, ops)
        elif kind == K_ADDI:
            if operands[0]:
                regs[operands[0]] = regs[operands[2]] + arg
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
