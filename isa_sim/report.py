"""Simulation report: cycles, engine busy time, utilisation, per-op breakdown and Chrome traces."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tasic.backend.isa_spec import Engine
from tasic.backend.target import Target
from tasic.isa_sim.program import Program
from tasic.isa_sim.timing import TraceRecord

ENGINES = (Engine.DMA_LOAD, Engine.DMA_STORE, Engine.MXU, Engine.VPU, Engine.LINK)
_ENGINE_NAMES = [engine.name for engine in Engine]  # by engine code
NO_LOC = "<unknown>"


@dataclass
class OpStat:
    """Busy cycles per engine of all instructions from one source location."""

    loc: str
    busy: dict[str, int]
    instructions: int

    @property
    def total(self) -> int:
        """Busy cycles summed over engines."""
        return sum(self.busy.values())


@dataclass
class TraceEvent:
    """One instruction on one engine, in cycles."""

    engine: str
    start: int
    end: int
    name: str
    loc: str


@dataclass
class Report:
    """Timing results of one simulation."""

    target: str
    clock_hz: float
    total_cycles: int
    instructions: int  # dynamic, control instructions included
    busy: dict[str, int]  # engine name -> busy cycles (DMA: cycles on the HBM channel)
    mxu_macs: int
    mxu_mac_slots: float  # MACs divided by the MXU rate of their dtype (fp8 MACs count half)
    mxu_peak_macs_per_cycle: int  # rows * cols * count (bf16 rate 1 normalisation)
    hbm_bytes: int
    hbm_bytes_per_cycle: float
    link_bytes: int
    link_bytes_per_cycle: float
    ops: list[OpStat]  # sorted by total busy cycles, largest first
    trace: list[TraceEvent] = field(default_factory=list)
    trace_truncated: bool = False

    @property
    def seconds(self) -> float:
        """Run time at the target clock."""
        return self.total_cycles / self.clock_hz

    @property
    def busy_pct(self) -> dict[str, float]:
        """Busy cycles per engine as a percentage of the total."""
        return {name: _pct(cycles, self.total_cycles) for name, cycles in self.busy.items()}

    @property
    def mxu_utilization(self) -> float:
        """Useful MACs over the peak MACs of the run at their dtype's rate (0..1)."""
        return _ratio(self.mxu_mac_slots, self.total_cycles * self.mxu_peak_macs_per_cycle)

    @property
    def hbm_utilization(self) -> float:
        """HBM bytes moved over what the bandwidth allows in the run (0..1)."""
        return _ratio(self.hbm_bytes, self.total_cycles * self.hbm_bytes_per_cycle)

    @property
    def link_utilization(self) -> float:
        """Chip-to-chip bytes sent over what one chip's links allow in the run (0..1)."""
        return _ratio(self.link_bytes, self.total_cycles * self.link_bytes_per_cycle)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (the trace itself is left out; see write_chrome_trace)."""
        return {
            "target": self.target,
            "clock_hz": self.clock_hz,
            "total_cycles": self.total_cycles,
            "seconds": self.seconds,
            "instructions": self.instructions,
            "busy_cycles": dict(self.busy),
            "busy_pct": self.busy_pct,
            "mxu_macs": self.mxu_macs,
            "mxu_utilization": self.mxu_utilization,
            "hbm_bytes": self.hbm_bytes,
            "hbm_utilization": self.hbm_utilization,
            "link_bytes": self.link_bytes,
            "link_utilization": self.link_utilization,
            "ops": [{**asdict(op), "total": op.total} for op in self.ops],
            "trace_events": len(self.trace),
            "trace_truncated": self.trace_truncated,
        }

    def format(self, top: int = 20) -> str:
        """A readable table of the results, with the `top` most expensive ops."""
        names = list(self.busy)
        lines = [
            f"target {self.target} @ {self.clock_hz / 1e9:g} GHz: {self.total_cycles:,} cycles"
            f" = {self.seconds * 1e6:,.3f} us, {self.instructions:,} instructions",
            f"MXU utilisation {self.mxu_utilization:.1%} ({self.mxu_macs:,} MACs);"
            f" HBM {self.hbm_bytes:,} bytes, {self.hbm_utilization:.1%} of bandwidth"
            + (f"; links {self.link_bytes:,} bytes, {self.link_utilization:.1%}" if self.link_bytes else ""),
            "",
            f"{'engine':<10} {'busy cycles':>14} {'busy':>7}",
        ]
        lines += [f"{name:<10} {self.busy[name]:>14,} {self.busy_pct[name]:>6.1f}%" for name in names]
        if self.ops:
            width = min(60, max(2, *(len(op.loc) for op in self.ops[:top])))
            lines += ["", f"{'op':<{width}} {'total':>12} " + " ".join(f"{n:>10}" for n in names) + f" {'instrs':>10}"]
            for op in self.ops[:top]:
                cells = " ".join(f"{op.busy[n]:>10,}" for n in names)
                lines.append(f"{_clip(op.loc, width):<{width}} {op.total:>12,} {cells} {op.instructions:>10,}")
            if len(self.ops) > top:
                lines.append(f"... {len(self.ops) - top} more ops")
        if self.trace_truncated:
            lines.append(f"trace truncated at {len(self.trace):,} events")
        return "\n".join(lines)


def make_report(
    target: Target,
    program: Program,
    counts: Sequence[int],
    total_cycles: int,
    metadata: dict[str, Any],
    events: Sequence[TraceRecord] = (),
    trace_truncated: bool = False,
) -> Report:
    """Aggregate per-instruction execution counts into a Report."""
    locs = [str(loc) for loc in metadata.get("locs", [])]
    instr_locs = list(metadata.get("instr_locs", []))
    loc_names = [locs[i] if 0 <= i < len(locs) else NO_LOC for i in instr_locs]
    loc_names += [NO_LOC] * (len(program.code) - len(loc_names))
    engines = [e for e in ENGINES if e != Engine.LINK or any(step[1] == Engine.LINK for step in program.steps)]
    busy = {engine.name: 0 for engine in engines}  # the link engine only for multi-chip programs
    per_loc: dict[str, OpStat] = {}
    for pc, count in enumerate(counts):
        if not count:
            continue
        loc = loc_names[pc]
        stat = per_loc.get(loc)
        if stat is None:
            stat = per_loc[loc] = OpStat(loc, dict.fromkeys(busy, 0), 0)
        stat.instructions += count
        engine = program.steps[pc][1]
        if engine != Engine.CTRL:
            name = _ENGINE_NAMES[engine]
            busy[name] += count * program.busy[pc]
            stat.busy[name] += count * program.busy[pc]
    mxu = target.mxu
    return Report(
        target=target.name,
        clock_hz=target.clock_hz,
        total_cycles=total_cycles,
        instructions=sum(counts),
        busy=busy,
        mxu_macs=sum(c * m for c, m in zip(counts, program.macs, strict=True)),
        mxu_mac_slots=sum(c * m for c, m in zip(counts, program.mac_slots, strict=True)),
        mxu_peak_macs_per_cycle=mxu.rows * mxu.cols * mxu.count,
        hbm_bytes=sum(c * b for c, b in zip(counts, program.hbm_bytes, strict=True)),
        hbm_bytes_per_cycle=target.hbm_bytes_per_cycle,
        link_bytes=sum(c * b for c, b in zip(counts, program.link_bytes, strict=True)),
        link_bytes_per_cycle=target.link_bytes_per_cycle,
        ops=sorted(per_loc.values(), key=lambda op: (-op.total, op.loc)),
        trace=[
            TraceEvent(Engine(engine).name, start, end, program.labels[pc], loc_names[pc])
            for engine, start, end, pc in events
        ],
        trace_truncated=trace_truncated,
    )


def write_chrome_trace(source: Report | Sequence[TraceEvent], path: str | Path, clock_hz: float = 1e9) -> None:
    """Write trace events as Chrome / Perfetto JSON: one thread per engine, timestamps in microseconds.

    Given a Report, its clock is used; given bare events, `clock_hz` converts cycles to time.
    """
    truncated = False
    if isinstance(source, Report):
        events, clock_hz, truncated = source.trace, source.clock_hz, source.trace_truncated
    else:
        events = source
    us_per_cycle = 1e6 / clock_hz
    threads = [e.name for e in Engine]
    trace: list[dict[str, Any]] = [
        {"name": "thread_name", "ph": "M", "pid": 0, "tid": tid, "args": {"name": name}}
        for tid, name in enumerate(threads)
    ]
    trace += [
        {
            "name": event.name,
            "ph": "X",
            "pid": 0,
            "tid": threads.index(event.engine),
            "ts": event.start * us_per_cycle,
            "dur": (event.end - event.start) * us_per_cycle,
            "args": {"loc": event.loc, "start_cycle": event.start, "end_cycle": event.end},
        }
        for event in events
    ]
    document = {"traceEvents": trace, "displayTimeUnit": "ns", "otherData": {"truncated": truncated}}
    Path(path).write_text(json.dumps(document))


def _pct(part: float, whole: float) -> float:
    return 100.0 * _ratio(part, whole)


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
