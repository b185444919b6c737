"""The seed benchmark's serving step: compile a Llama-family config for N chips and account its time.

    config = load_config("llama-3-70b")                 # shipped name or config.json path
    step = BatchStep.seed()                              # one 2048-token prompt + 127 decode tokens
    binary = compile_step(config, step, target, "bf16", tp=8)
    result = simulate_step(binary, config, step, target, tp=8)   # timing only
    print("\\n".join(result.lines()))

The roofline is analytical (docs/seed.md): useful FLOPs at the matrix engines' peak, the bytes that
must cross HBM (weights once, KV cache read and written, nothing else), and the bytes the
all-reduces must send, each per chip; the step cannot beat the largest of the three.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasic.backend.isa_spec import DTYPE_BY_NAME, DTYPE_BYTES
from tasic.backend.target import Target
from tasic.backend.tbin import TBinary
from tasic.compiler import CompileError, compile_module, default_pipeline
from tasic.frontend.llama_step import BatchStep, LlamaConfig, build_step
from tasic.isa_sim.report import Report
from tasic.isa_sim.simulator import simulate_timing


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


@dataclass(frozen=True)
class Roofline:
    """Per-chip work of one step and the time each resource needs for it at peak."""

    flops: float
    hbm_bytes: float
    link_bytes: float
    compute_s: float
    memory_s: float
    link_s: float

    @property
    def bound_s(self) -> float:
        """The step cannot be faster than this."""
        return max(self.compute_s, self.memory_s, self.link_s)

    @property
    def limit(self) -> str:
        """Which resource sets the bound."""
        times = {"compute": self.compute_s, "memory": self.memory_s, "link": self.link_s}
        return max(times, key=times.__getitem__)


def _bytes_of(dtype: str) -> int:
    return DTYPE_BYTES[DTYPE_BY_NAME[dtype]]


def roofline(
    config: LlamaConfig, step: BatchStep, target: Target, dtype: str, tp: int, quantize: str | None = None
) -> Roofline:
    """The analytical bound of one step on `tp` chips of `target` (see the module docstring).

    With `quantize` (FP8 linears) the linear layers' weights are 1 byte and their products run at the
    MXU's f8e4m3 rate; attention, activations, KV cache and all-reduces stay in `dtype`.
    """
    c = config
    hd, eb = c.head_dim, _bytes_of(dtype)
    linear_eb = 1 if quantize else eb
    per_layer = c.hidden * hd * (c.heads + 2 * c.kv_heads) + c.heads * hd * c.hidden + 3 * c.hidden * c.ffn
    linear_macs = step.tokens * c.layers * per_layer / tp + (1 + step.decode_tokens) * c.hidden * c.vocab
    prompt_pairs = step.prefill * (step.prefill + 1) // 2
    attended = prompt_pairs + sum(count * context for count, context in step.decode_groups)
    attention_macs = c.layers * (c.heads // tp) * attended * hd * 2
    flops = 2 * (linear_macs + attention_macs)
    linear_weights = c.layers * per_layer / tp + c.vocab * c.hidden  # the lm_head is a linear too
    other_weights = c.step_rows_of_embedding(step.tokens) + (2 * c.layers + 1) * c.hidden
    kv_slots = step.tokens + sum(count * context for count, context in step.decode_groups)
    kv_bytes = c.layers * (c.kv_heads // tp) * hd * 2 * kv_slots * eb
    hbm = linear_weights * linear_eb + other_weights * eb + kv_bytes
    link = 2 * c.layers * step.tokens * c.hidden * eb * 2 * (tp - 1) / tp
    macs_per_s = target.mxu.rows * target.mxu.cols * target.mxu.count * target.clock_hz
    linear_rate = target.mxu.rate["f8e4m3" if quantize else dtype]
    attention_rate = target.mxu.rate[dtype]
    compute_s = linear_macs / (macs_per_s * linear_rate) + attention_macs / (macs_per_s * attention_rate)
    link_s = link / target.links.bandwidth if link else 0.0
    return Roofline(flops, hbm, link, compute_s, hbm / target.hbm.bandwidth, link_s)


def check_fits(config: LlamaConfig, step: BatchStep, target: Target, dtype: str, tp: int) -> None:
    """CompileError unless heads divide over `tp` chips and each chip's weights and KV cache fit its HBM."""
    c = config
    if tp < 1:
        raise CompileError(f"--tp must be at least 1, not {tp}")
    if c.heads % tp or c.kv_heads % tp:
        divisors = [n for n in range(1, c.kv_heads + 1) if c.kv_heads % n == 0 and c.heads % n == 0]
        raise CompileError(
            f"--tp {tp} does not divide {c.name}'s {c.heads} attention heads and {c.kv_heads} key/value heads"
            f" evenly: choose one of {', '.join(map(str, divisors))}"
        )
    if tp > target.chips:
        raise CompileError(f"--tp {tp} needs {tp} chips, target '{target.name}' has {target.chips}")
    need = _hbm_per_chip(c, step, dtype, tp)
    if need > target.hbm.bytes:
        fits = [n for n in range(tp + 1, 4 * c.kv_heads + 1) if _hbm_per_chip(c, step, dtype, n) <= target.hbm.bytes]
        hint = f"; it would fit on {fits[0]} chips" if fits else ""
        raise CompileError(
            f"{c.name} does not fit {tp} chip(s) of '{target.name}': weights + KV cache need {need / 1e9:,.1f} GB"
            f" per chip in {dtype}, a chip has {target.hbm.bytes / 1e9:,.1f} GB{hint}"
        )


def _hbm_per_chip(c: LlamaConfig, step: BatchStep, dtype: str, tp: int) -> float:
    eb = _bytes_of(dtype)
    per_layer = c.hidden * c.head_dim * (2 * c.heads + 2 * c.kv_heads) + 3 * c.hidden * c.ffn
    weights = (c.layers * per_layer / tp + 2 * c.vocab * c.hidden) * eb
    slots = step.cache_len + sum(count * context for count, context in step.decode_groups)
    kv = c.layers * c.head_dim * 2 * max(1, c.kv_heads // tp) * slots * eb
    return weights + kv


OPTIMISATIONS: dict[str, str] = {
    "rope-fusion": "rotary embeddings as one tfm.rope kernel (raise-rope) instead of six",
    "linear-fusion": "q/k/v and gate/up linears as one matmul each, silu(gate) * up on its tiles (fuse-linears)",
    "decode-batching": "decode attention: many sequences per matrix instruction (tile decode_batch)",
    "flash-attention": "prefill attention in key blocks, online softmax, causal blocks skipped (tile flash)",
    "cost-model-tiles": "matmul tiles chosen by estimated time under the SRAM capacity (tile cost_model)",
    "epilogue-fusion": "residual adds, SiLU and gating applied to matmul / all-reduce tiles (tile epilogue_fusion)",
    "double-buffering": "second copies of iteration-private tiles so DMA runs ahead (double-buffer)",
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
_PASSES = {"rope-fusion": "raise-rope", "linear-fusion": "fuse-linears", "double-buffering": "double-buffer"}


def step_pipeline(
    target: Target, dtype: str, tp: int, disabled: frozenset[str] = frozenset(), quantize: str | None = None
) -> str:
    """The default pipeline (with `quantize`, e.g. "fp8") with the named optimisations switched off."""
    unknown = sorted(disabled - set(OPTIMISATIONS))
    if unknown:
        raise CompileError(f"unknown optimisation(s) {', '.join(unknown)}: choose from {', '.join(OPTIMISATIONS)}")
    passes = default_pipeline(target.spec, dtype, tp, quantize).split(",")
    dropped = {_PASSES[name] for name in disabled if name in _PASSES}
    passes = [p for p in passes if p.split("{")[0] not in dropped]
    options = " ".join(f"{_TILE_OPTIONS[name]}=false" for name in sorted(disabled) if name in _TILE_OPTIONS)
    if options:
        passes = [p.replace("}", f" {options}}}") if p.startswith("tile{") else p for p in passes]
    if "kernel-overlap" in disabled:
        passes = ["insert-sync{kernel_barriers=true}" if p == "insert-sync" else p for p in passes]
    return ",".join(passes)


def compile_step(
    config: LlamaConfig,
    step: BatchStep,
    target: Target,
    dtype: str,
    tp: int,
    pipeline: str | None = None,
    progress: Callable[[str], None] | None = None,
    quantize: str | None = None,
) -> TBinary:
    """A timing-only binary of one serving step of `config` on `tp` chips (linears in FP8 with quantize="fp8")."""
    check_fits(config, step, target, dtype, tp)
    graph = build_step(config, step)
    metadata = {
        "model": config.name,
        "step": {"prefill": step.prefill, "decode_groups": [list(g) for g in step.decode_groups], "tp": tp},
    }
    if quantize:
        metadata["quantize"] = quantize
    pipeline = pipeline or default_pipeline(target.spec, dtype, tp, quantize)
    return compile_module(graph.module, None, target, dtype, pipeline, metadata, progress)


@dataclass
class StepResult:
    """A simulated step beside its roofline."""

    config: LlamaConfig
    step: BatchStep
    target: Target
    tp: int
    report: Report
    roofline: Roofline
    sim_s: float

    @property
    def step_s(self) -> float:
        """Simulated time of the step (all chips run in lock step)."""
        return self.report.seconds

    @property
    def tokens_per_s(self) -> float:
        """Input + output tokens per second of the whole system, as Etched counts them."""
        return self.step.tokens / self.step_s

    @property
    def roofline_ratio(self) -> float:
        """Step time over the roofline bound (1.0 is perfect)."""
        return self.step_s / self.roofline.bound_s

    def lines(self) -> list[str]:
        """A printable summary."""
        r, roof = self.report, self.roofline
        return [
            f"{self.config.name} on {self.tp} x {self.target.name}: one step = {self.step.prefill}-token prefill"
            f" + {self.step.decode_tokens} decode tokens ({self.step.tokens} tokens)",
            f"  step {self.step_s * 1e3:.3f} ms ({r.total_cycles:,} cycles) -> {self.tokens_per_s:,.0f} tokens/s",
            f"  MXU {r.mxu_utilization:.1%}, HBM {r.hbm_utilization:.1%}, links {r.link_utilization:.1%} (per chip)",
            f"  roofline per chip: compute {roof.compute_s * 1e3:.3f} ms ({roof.flops / 1e12:.1f} TFLOP),"
            f" memory {roof.memory_s * 1e3:.3f} ms ({roof.hbm_bytes / 1e9:.2f} GB),"
            f" link {roof.link_s * 1e3:.3f} ms ({roof.link_bytes / 1e9:.2f} GB)",
            f"  bound {roof.bound_s * 1e3:.3f} ms ({roof.limit}); step / bound = {self.roofline_ratio:.2f}x",
            f"  simulator {self.sim_s:.1f}s",
        ]


def simulate_step(binary: TBinary, config: LlamaConfig, step: BatchStep, target: Target, tp: int) -> StepResult:
    """Timing-only simulation of a compiled step."""
    start = time.perf_counter()
    report = simulate_timing(binary, target)
    elapsed = time.perf_counter() - start
    bound = roofline(config, step, target, binary.metadata["dtype"], tp, binary.metadata.get("quantize"))
    return StepResult(config, step, target, tp, report, bound, elapsed)
