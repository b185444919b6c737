"""The seed benchmark's serving step: compile a Llama-family config for N chips and account its time.

    config = load_config("llama-3-70b")                 # shipped name or config.json path
    step = BatchStep.seed()                              # one 2048-token prompt + 127 decode tokens
    binary = compile_step(config, step, target, "bf16", tp=8)
    result = simulate_step(binary, config, step, target, tp=8)   # timing only
    print("\\n".join(result.lines()))

Each stage is measured against its analytical bounds (tasic/roofline.py, docs/seed.md): useful FLOPs
at the matrix engines' peak, the bytes that must cross HBM, the bytes the links must carry, and the
step's products in whole folds of the target's arrays.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasic.backend.target import Target
from tasic.backend.tbin import TBinary
from tasic.compiler import CompileError, compile_module, default_pipeline
from tasic.frontend.llama_step import BatchStep, LlamaConfig, PipelineStage, build_step
from tasic.isa_sim.report import Report
from tasic.isa_sim.simulator import simulate_timing
from tasic.roofline import Roofline, bytes_of, roofline


def shipped_configs() -> list[str]:
    """Names of the model configs shipped with tasic."""
    return sorted(path.stem for path in _config_dir().glob("*.json"))


def _config_dir() -> Path:
    from tasic import frontend

    return Path(frontend.__file__).resolve().parent / "configs"


def load_config(name_or_path: str) -> LlamaConfig:
    """A shipped config by name (e.g. llama-3-70b) or a config.json path."""
    path = Path(name_or_path)
    if not path.exists() and not name_or_path.endswith(".json"):
        shipped = _config_dir() / f"{name_or_path}.json"
        if not shipped.exists():
            raise CompileError(
                f"no config '{name_or_path}': give a config.json path or one of {', '.join(shipped_configs())}"
            )
        path = shipped
    return LlamaConfig.load(path)


KV_DTYPES = ("f32", "bf16", "f8e4m3", "f8e5m2")
"""Dtypes a serving step's KV cache may be stored in."""


def default_kv_dtype(dtype: str, quantize: str | None) -> str:
    """The KV cache of an FP8 step is FP8 (E4M3: half the bytes the decode attention reads), else `dtype`."""
    return "f8e4m3" if quantize else dtype


def check_fits(
    config: LlamaConfig,
    step: BatchStep,
    target: Target,
    dtype: str,
    tp: int,
    pp: int = 1,
    kv_dtype: str | None = None,
) -> None:
    """CompileError unless heads divide over `tp` chips, the `pp` pipeline stages have layers, the
    target has tp x pp chips and each chip's weights and KV cache (in `kv_dtype`, default `dtype`)
    fit its HBM."""
    c = config
    kv_dtype = kv_dtype or dtype
    if kv_dtype not in KV_DTYPES:
        raise CompileError(f"unsupported KV-cache dtype '{kv_dtype}': choose one of {', '.join(KV_DTYPES)}")
    if tp < 1:
        raise CompileError(f"--tp must be at least 1, not {tp}")
    if not 1 <= pp <= c.layers:
        raise CompileError(f"--pp must be between 1 and {c.name}'s {c.layers} layers, not {pp}")
    if c.heads % tp or c.kv_heads % tp:
        divisors = [n for n in range(1, c.kv_heads + 1) if c.kv_heads % n == 0 and c.heads % n == 0]
        raise CompileError(
            f"--tp {tp} does not divide {c.name}'s {c.heads} attention heads and {c.kv_heads} key/value heads"
            f" evenly: choose one of {', '.join(map(str, divisors))}"
        )
    if tp * pp > target.chips:
        stages = f" x --pp {pp}" if pp > 1 else ""
        raise CompileError(f"--tp {tp}{stages} needs {tp * pp} chips, target '{target.name}' has {target.chips}")
    need = _hbm_per_chip(c, step, dtype, tp, pp, kv_dtype)
    if need > target.hbm.bytes:
        fits = [
            n
            for n in range(tp + 1, 4 * c.kv_heads + 1)
            if _hbm_per_chip(c, step, dtype, n, pp, kv_dtype) <= target.hbm.bytes
        ]
        hint = f"; it would fit on {fits[0] * pp} chips" if fits else ""
        kv_note = f" (KV cache in {kv_dtype})" if kv_dtype != dtype else ""
        raise CompileError(
            f"{c.name} does not fit {tp * pp} chip(s) of '{target.name}': weights + KV cache need"
            f" {need / 1e9:,.1f} GB per chip in {dtype}{kv_note}, a chip has {target.hbm.bytes / 1e9:,.1f} GB{hint}"
        )


def _hbm_per_chip(c: LlamaConfig, step: BatchStep, dtype: str, tp: int, pp: int = 1, kv_dtype: str = "") -> float:
    """Bytes of the fullest chip: the first pipeline stage (most layers, embedding; lm_head if alone)."""
    eb = bytes_of(dtype)
    layers = len(PipelineStage(0, pp).layers(c.layers))
    per_layer = c.linear_weights_per_layer
    tables = 2 if pp == 1 else 1  # embedding and lm_head on one stage, or one each on the first and last
    weights = (layers * per_layer / tp + tables * c.vocab * c.hidden) * eb
    slots = step.cache_len + sum(count * context for count, context in step.decode_groups)
    kv = layers * c.head_dim * 2 * max(1, c.kv_heads // tp) * slots * bytes_of(kv_dtype or dtype)
    return weights + kv


OPTIMISATIONS: dict[str, str] = {
    "rope-fusion": "rotary embeddings as one tfm.rope kernel (raise-rope) instead of six",
    "linear-fusion": "q/k/v and gate/up linears as one matmul each, silu(gate) * up on its tiles (fuse-linears)",
    "scale-folding": "the attention's score scale folded into the query projection's weights (fold-attention-scale)",
    "decode-batching": "decode attention: many sequences per matrix instruction (tile decode_batch)",
    "flash-attention": "prefill attention in key blocks, online softmax, causal blocks skipped (tile flash)",
    "cost-model-tiles": "matmul tiles chosen by estimated time under the SRAM capacity (tile cost_model)",
    "epilogue-fusion": "residual adds, SiLU and gating applied to matmul / all-reduce tiles (tile epilogue_fusion)",
    "double-buffering": "second copies of iteration-private tiles so DMA runs ahead (double-buffer)",
    "weight-prefetch": "first weight loads of a kernel in the previous one's K loop or second half (prefetch-weights)",
    "allreduce-overlap": "row-parallel matmuls all-reduce row chunks while the MXU computes the next (tile)",
    "kernel-overlap": "kernels wait only for what they read or overwrite, not for a barrier (insert-sync)",
}
"""Optimisations the seed pipeline can switch off one at a time (bench/seed.py ablation)."""

_TILE_OPTIONS = {
    "decode-batching": "decode_batch",
    "flash-attention": "flash",
    "cost-model-tiles": "cost_model",
    "epilogue-fusion": "epilogue_fusion",
    "allreduce-overlap": "allreduce_overlap",
}
_PASSES = {
    "rope-fusion": "raise-rope",
    "linear-fusion": "fuse-linears",
    "scale-folding": "fold-attention-scale",
    "double-buffering": "double-buffer",
    "weight-prefetch": "prefetch-weights",
}


def step_pipeline(
    target: Target,
    dtype: str,
    tp: int,
    disabled: frozenset[str] = frozenset(),
    quantize: str | None = None,
    kv_dtype: str | None = None,
) -> str:
    """The default pipeline (with `quantize`, e.g. "fp8", and the KV cache in `kv_dtype`) with the
    named optimisations switched off."""
    unknown = sorted(disabled - set(OPTIMISATIONS))
    if unknown:
        raise CompileError(f"unknown optimisation(s) {', '.join(unknown)}: choose from {', '.join(OPTIMISATIONS)}")
    passes = default_pipeline(target.spec, dtype, tp, quantize, kv_dtype=kv_dtype).split(",")
    dropped = {_PASSES[name] for name in disabled if name in _PASSES}
    passes = [p for p in passes if p.split("{")[0] not in dropped]
    options = " ".join(f"{_TILE_OPTIONS[name]}=false" for name in sorted(disabled) if name in _TILE_OPTIONS)
    if options:
        passes = [p.replace("}", f" {options}}}") if p.startswith("tile{") else p for p in passes]
    if "kernel-overlap" in disabled:
        passes = ["insert-sync{kernel_barriers=true}" if p == "insert-sync" else p for p in passes]
    return ",".join(passes)


@dataclass(frozen=True)
class StageBinary:
    """The binary of one pipeline stage and the stages it stands for: stages with the same number of
    layers and neither the embedding nor the lm_head run the same program on their own layers' weights."""

    stage: PipelineStage
    stands_for: tuple[int, ...]
    binary: TBinary


def distinct_stages(config: LlamaConfig, pp: int) -> list[tuple[PipelineStage, tuple[int, ...]]]:
    """One stage of each distinct program among `pp` stages, with the indices of the stages it stands for."""
    kinds: dict[tuple[bool, bool, int], list[int]] = {}
    for index in range(pp):
        stage = PipelineStage(index, pp)
        kinds.setdefault((stage.first, stage.last, len(stage.layers(config.layers))), []).append(index)
    return [(PipelineStage(indices[0], pp), tuple(indices)) for indices in kinds.values()]


def compile_step(
    config: LlamaConfig,
    step: BatchStep,
    target: Target,
    dtype: str,
    tp: int,
    pipeline: str | None = None,
    progress: Callable[[str], None] | None = None,
    quantize: str | None = None,
    pp: int = 1,
    kv_dtype: str | None = None,
) -> list[StageBinary]:
    """Timing-only binaries of one serving step of `config` on `tp` chips per stage and `pp` pipeline
    stages (linears in FP8 with quantize="fp8"): one binary per distinct stage (`distinct_stages`)."""
    check_fits(config, step, target, dtype, tp, pp, kv_dtype)
    kv_dtype = kv_dtype or dtype
    pipeline = pipeline or default_pipeline(target.spec, dtype, tp, quantize, kv_dtype=kv_dtype)
    binaries = []
    for stage, stands_for in distinct_stages(config, pp):
        if pp > 1 and progress:
            progress(f"  pipeline stage {stage.index} (stands for stages {', '.join(map(str, stands_for))})")
        graph = build_step(config, step, stage=stage)
        metadata: dict[str, object] = {
            "model": config.name,
            "step": {"prefill": step.prefill, "decode_groups": [list(g) for g in step.decode_groups], "tp": tp},
        }
        if pp > 1:
            layers = stage.layers(config.layers)
            metadata["stage"] = {"index": stage.index, "of": pp, "layers": [layers.start, layers.stop]}
        if quantize:
            metadata["quantize"] = quantize
        binary = compile_module(graph.module, None, target, dtype, pipeline, metadata, progress)
        binaries.append(StageBinary(stage, stands_for, binary))
    return binaries


@dataclass(frozen=True)
class StageRun:
    """The simulated timing of one distinct pipeline stage."""

    stage: PipelineStage
    stands_for: tuple[int, ...]
    report: Report
    roofline: Roofline


@dataclass
class StepResult:
    """A simulated step beside its roofline. With pipeline stages the system finishes one step per
    slowest-stage time (every stage works on its own step at once), and that is the step time."""

    config: LlamaConfig
    step: BatchStep
    target: Target
    tp: int
    stages: list[StageRun]
    sim_s: float

    @property
    def pp(self) -> int:
        """Pipeline stages."""
        return sum(len(run.stands_for) for run in self.stages)

    @property
    def slowest(self) -> StageRun:
        """The stage that sets the step time."""
        return max(self.stages, key=lambda run: run.report.total_cycles)

    @property
    def report(self) -> Report:
        """The timing report of the slowest stage (the whole step without pipelining)."""
        return self.slowest.report

    @property
    def roofline(self) -> Roofline:
        """The largest bound of any stage: the system cannot finish steps faster than that."""
        return max((run.roofline for run in self.stages), key=lambda roof: roof.bound_s)

    @property
    def step_s(self) -> float:
        """Simulated time of the step (all chips of a stage run in lock step)."""
        return self.report.seconds

    @property
    def tokens_per_s(self) -> float:
        """Input + output tokens per second of the whole system, as Etched counts them."""
        return self.step.tokens / self.step_s

    @property
    def roofline_ratio(self) -> float:
        """Step time over the roofline bound (1.0 is perfect)."""
        return self.step_s / self.roofline.bound_s

    def _mean_over_chips(self, used: Callable[[Report], float], capacity_per_cycle: float) -> float:
        """Work of every stage's chips over what all of them could do in one step (0..1)."""
        cycles = self.report.total_cycles
        work = sum(used(run.report) * len(run.stands_for) for run in self.stages)
        return work / (cycles * capacity_per_cycle * self.pp) if cycles else 0.0

    @property
    def mxu_utilization(self) -> float:
        """Useful MACs of all chips over their peak in one step (idle stages included)."""
        r = self.report
        return self._mean_over_chips(lambda rep: rep.mxu_mac_slots, r.mxu_peak_macs_per_cycle)

    @property
    def hbm_utilization(self) -> float:
        """HBM bytes of all chips over their bandwidth in one step."""
        return self._mean_over_chips(lambda rep: rep.hbm_bytes, self.report.hbm_bytes_per_cycle)

    @property
    def link_utilization(self) -> float:
        """Bytes all chips send over their links' capacity in one step."""
        return self._mean_over_chips(lambda rep: rep.link_bytes, self.report.link_bytes_per_cycle)

    def busy_summary(self) -> str:
        """Busy time of each engine of the slowest stage in one step, busiest first (a vector- or DMA-bound
        step shows here: the roofline counts only products, bytes and link traffic)."""
        clock = self.target.clock_hz
        busy = sorted(self.report.busy.items(), key=lambda item: -item[1])
        return ", ".join(f"{name} {cycles / clock * 1e3:.3f} ms" for name, cycles in busy)

    def lines(self) -> list[str]:
        """A printable summary."""
        r, roof, mxu = self.report, self.roofline, self.target.mxu
        chips = (
            f"{self.tp} x {self.target.name}" if self.pp == 1 else f"{self.pp} stages x {self.tp} x {self.target.name}"
        )
        lines = [
            f"{self.config.name} on {chips}: one step = {self.step.prefill}-token prefill"
            f" + {self.step.decode_tokens} decode tokens ({self.step.tokens} tokens)",
            f"  step {self.step_s * 1e3:.3f} ms ({r.total_cycles:,} cycles) -> {self.tokens_per_s:,.0f} tokens/s",
        ]
        if self.pp > 1:
            lines += [
                f"    stage {run.stage.index} (as {', '.join(map(str, run.stands_for))}):"
                f" {run.report.seconds * 1e3:.3f} ms, layers {_span(run.stage.layers(self.config.layers))}"
                for run in self.stages
            ]
            lines.append(f"    a token's latency through all {self.pp} stages: {self.pp * self.step_s * 1e3:.3f} ms")
        lines += [
            f"  MXU {self.mxu_utilization:.1%}, HBM {self.hbm_utilization:.1%}, links {self.link_utilization:.1%}"
            " (all chips)",
            f"  roofline per chip: compute {roof.compute_s * 1e3:.3f} ms ({roof.flops / 1e12:.1f} TFLOP),"
            f" memory {roof.memory_s * 1e3:.3f} ms ({roof.hbm_bytes / 1e9:.2f} GB),"
            f" link {roof.link_s * 1e3:.3f} ms ({roof.link_bytes / 1e9:.2f} GB)",
            f"  bound {roof.bound_s * 1e3:.3f} ms ({roof.limit}); step / bound = {self.roofline_ratio:.2f}x",
            f"  engines busy{' (slowest stage)' if self.pp > 1 else ''}: {self.busy_summary()}",
            f"  arrays: the products in whole {mxu.rows}x{mxu.cols} folds need {roof.arrays_s * 1e3:.3f} ms"
            f" (MXU at most {roof.mxu_ceiling:.1%} on this geometry); step / that = {self.step_s / roof.arrays_s:.2f}x",
            f"  simulator {self.sim_s:.1f}s",
        ]
        return lines


def _span(layers: range) -> str:
    return f"{layers.start}-{layers.stop - 1}" if len(layers) > 1 else str(layers.start)


def simulate_step(
    binaries: list[StageBinary], config: LlamaConfig, step: BatchStep, target: Target, tp: int
) -> StepResult:
    """Timing-only simulation of a compiled step, stage by stage."""
    start = time.perf_counter()
    runs = []
    for compiled in binaries:
        report = simulate_timing(compiled.binary, target)
        metadata = compiled.binary.metadata
        dtype, quantize = metadata["dtype"], metadata.get("quantize")
        kv_dtype = next((s.dtype for s in compiled.binary.symbols if s.kind == "kv"), dtype)  # as compiled
        bound = roofline(config, step, target, dtype, tp, quantize, compiled.stage, kv_dtype)
        runs.append(StageRun(compiled.stage, compiled.stands_for, report, bound))
    return StepResult(config, step, target, tp, runs, time.perf_counter() - start)
