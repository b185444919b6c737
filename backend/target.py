"""Target descriptions: one TOML file per chip (and system), loaded into data.

A target is data, not code: `backend/targets/NAME.toml` holds the figures and
docs/targets.md explains each field. Example::

    >>> target = load_target("tiny")
    >>> target.mxu.rows, target.sram.bytes
    (16, 262144)
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

TARGETS_DIR = Path(__file__).parent / "targets"


class TargetError(Exception):
    """A target name or file that cannot be used (message is user-facing)."""


@dataclass(frozen=True)
class MatrixEngine:
    """Systolic arrays (output stationary) that execute MXU_MATMUL."""

    rows: int
    cols: int
    count: int
    # MACs per processing element per cycle, by input dtype name.
    rate: dict[str, float]
    pipelined: bool = True


@dataclass(frozen=True)
class VectorEngine:
    """SIMD vector unit that executes VPU_* instructions."""

    lanes: int
    latency: int
    # cycles per lane-group, by cost class: simple, transcendental, reduce.
    cost: dict[str, int]


@dataclass(frozen=True)
class Memory:
    """A memory: capacity in bytes, bandwidth in bytes/s, latency in cycles."""

    bytes: int
    bandwidth: float
    latency: int = 0


@dataclass(frozen=True)
class Links:
    """Chip-to-chip links of the system (used from the multi-chip issue on)."""

    bandwidth: float
    latency: int
    topology: str


@dataclass(frozen=True)
class Target:
    """One chip, and how many of them form the system."""

    name: str
    description: str
    clock_hz: float
    chips: int
    mxu: MatrixEngine
    vpu: VectorEngine
    sram: Memory
    hbm: Memory
    dma_engines: int
    issue_per_cycle: int
    links: Links
    source_text: str = field(repr=False, default="")
    spec: str = ""  # how to load it again: a shipped name or the file's absolute path

    @property
    def hash(self) -> bytes:
        """sha256 of the target file's text; binaries record it."""
        return hashlib.sha256(self.source_text.encode()).digest()

    @property
    def link_bytes_per_cycle(self) -> float:
        """Chip-to-chip bandwidth of one chip (all its links) per clock cycle."""
        return self.links.bandwidth / self.clock_hz

    @property
    def peer_link_bytes_per_cycle(self) -> float:
        """Link bandwidth per clock cycle from this chip to one peer (e.g. the next pipeline stage).

        All-to-all with more than one chip: each of the `chips - 1` peers has its own share of the
        links, so one peer gets `link_bytes_per_cycle / (chips - 1)`; otherwise all of it.
        """
        if self.links.topology == "all-to-all" and self.chips > 1:
            return self.link_bytes_per_cycle / (self.chips - 1)
        return self.link_bytes_per_cycle

    @property
    def hbm_bytes_per_cycle(self) -> float:
        """HBM bandwidth expressed per clock cycle."""
        return self.hbm.bandwidth / self.clock_hz

    @property
    def peak_macs_per_cycle(self) -> float:
        """Peak MACs per cycle of all arrays for bf16 inputs."""
        return self.mxu.rows * self.mxu.cols * self.mxu.count * self.mxu.rate.get("bf16", 1.0)


VPU_COST_CLASSES = ("simple", "transcendental", "reduce")
"""Vector instruction classes every target prices (isa_sim/timing.py)."""


def available_targets() -> list[str]:
    """Names of the shipped targets."""
    return sorted(path.stem for path in TARGETS_DIR.glob("*.toml"))


def load_target(name_or_path: str) -> Target:
    """Load a shipped target by name, or a TOML file by path."""
    path = Path(name_or_path)
    if not (path.suffix == ".toml" and path.is_file()):
        path = TARGETS_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            known = ", ".join(available_targets())
            raise TargetError(f"unknown target '{name_or_path}': choose one of {known} or give a .toml file")
    text = path.read_text()
    spec = name_or_path if path.parent == TARGETS_DIR else str(path.resolve())
    try:
        data = tomllib.loads(text)
        target = _build(data, text, spec)
    except KeyError as err:
        raise TargetError(f"target file {path} is invalid: it lacks {err} (see docs/targets.md)") from None
    except (tomllib.TOMLDecodeError, TypeError, ValueError, AttributeError) as err:
        raise TargetError(f"target file {path} is invalid: {err}") from None
    problem = _problem(target)
    if problem:
        raise TargetError(f"target file {path} is invalid: {problem}")
    return target


def _problem(target: Target) -> str | None:
    """The first figure of `target` that no machine can have (a zero-row array, no lanes, ...), or None."""
    at_least_one = {
        "chips": target.chips,
        "mxu.rows": target.mxu.rows,
        "mxu.cols": target.mxu.cols,
        "mxu.count": target.mxu.count,
        "vpu.lanes": target.vpu.lanes,
        "sram.bytes": target.sram.bytes,
        "hbm.bytes": target.hbm.bytes,
        "dma.engines": target.dma_engines,
        "issue.per_cycle": target.issue_per_cycle,
        **{f"vpu.cost.{name}": cost for name, cost in target.vpu.cost.items()},
    }
    positive = {
        "clock_hz": target.clock_hz,
        "sram.bandwidth": target.sram.bandwidth,
        "hbm.bandwidth": target.hbm.bandwidth,
        "links.bandwidth": target.links.bandwidth,
        **{f"mxu.rate.{name}": rate for name, rate in target.mxu.rate.items()},
    }
    not_negative = {
        "vpu.latency": target.vpu.latency,
        "hbm.latency": target.hbm.latency,
        "links.latency": target.links.latency,
    }
    for name, value in at_least_one.items():
        if value < 1:
            return f"{name} must be at least 1 (it is {value})"
    for name, number in positive.items():
        if not number > 0 or number == float("inf"):
            return f"{name} must be a positive number (it is {number})"
    for name, value in not_negative.items():
        if value < 0:
            return f"{name} must not be negative (it is {value})"
    missing = [name for name in VPU_COST_CLASSES if name not in target.vpu.cost]
    if missing:
        return f"vpu.cost lacks {', '.join(missing)}"
    if not target.mxu.rate:
        return "mxu.rate names no dtype"
    return None


def _build(data: dict, text: str, spec: str) -> Target:
    mxu, vpu, sram, hbm, links = data["mxu"], data["vpu"], data["sram"], data["hbm"], data["links"]
    return Target(
        name=str(data["name"]),
        description=str(data.get("description", "")),
        clock_hz=float(data["clock_hz"]),
        chips=int(data.get("chips", 1)),
        mxu=MatrixEngine(
            rows=int(mxu["rows"]),
            cols=int(mxu["cols"]),
            count=int(mxu["count"]),
            rate={str(k): float(v) for k, v in mxu["rate"].items()},
            pipelined=bool(mxu.get("pipelined", True)),
        ),
        vpu=VectorEngine(
            lanes=int(vpu["lanes"]),
            latency=int(vpu["latency"]),
            cost={str(k): int(v) for k, v in vpu["cost"].items()},
        ),
        sram=Memory(bytes=int(sram["bytes"]), bandwidth=float(sram["bandwidth"])),
        hbm=Memory(bytes=int(hbm["bytes"]), bandwidth=float(hbm["bandwidth"]), latency=int(hbm["latency"])),
        dma_engines=int(data["dma"]["engines"]),
        issue_per_cycle=int(data["issue"]["per_cycle"]),
        links=Links(
            bandwidth=float(links["bandwidth"]), latency=int(links["latency"]), topology=str(links["topology"])
        ),
        source_text=text,
        spec=spec,
    )
