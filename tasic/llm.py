"""LLMs on the simulated chip: compile prefill + bucketed decode, then generate text.

binary, tokenizer = compile_llm("model_dir_or.gguf", target, "f32", batch=1, context=256, prompt_len=64)
session = LlmSession(binary, target)
session.prefill(inputs); session.decode(step_inputs)   # cycles accumulate in session.stats
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasic.backend.target import Target
from tasic.backend.tbin import TBinary
from tasic.compiler import CompileError, compile_module, default_pipeline
from tasic.isa_sim import Machine
from tasic.isa_sim.report import Report

SMALLEST_BUCKET = 64


def llm_pipeline(
    target: Target, dtype: str, context: int, quantize: str | None = None, calibration: str | None = None
) -> str:
    """The default pipeline (with `quantize`, see `default_pipeline`) with decode entry points per context bucket."""
    passes = default_pipeline(target.spec, dtype, quantize=quantize, calibration=calibration).split(",")
    index = next(i for i, p in enumerate(passes) if p.startswith("tile"))
    smallest = min(SMALLEST_BUCKET, context)
    return ",".join([*passes[:index], f"decode-buckets{{smallest={smallest}}}", *passes[index:]])


def memory_plan(weight_bytes: int, state_shapes: dict[str, tuple[int, ...]], element_bytes: int, target: Target) -> str:
    """Weights and KV cache against the target's HBM, as printable lines; raises CompileError if too big."""
    batch, context = next(iter(state_shapes.values()))[0], next(iter(state_shapes.values()))[2]
    kv_total = sum(int(np.prod(shape)) for shape in state_shapes.values()) * element_bytes
    per_token = kv_total // (batch * context)
    lines = [
        f"memory plan for {target.name} (HBM {target.hbm.bytes:,} bytes, SRAM {target.sram.bytes:,} bytes):",
        f"  weights        {weight_bytes:,} bytes",
        f"  KV cache       {per_token:,} bytes per token (layers x kv_heads x head_dim x 2 x {element_bytes} bytes)",
        f"                 {kv_total:,} bytes for context {context} x batch {batch}",
    ]
    if weight_bytes + kv_total > target.hbm.bytes:
        raise CompileError(
            f"model does not fit target '{target.name}': weights {weight_bytes:,} + KV cache {kv_total:,} bytes "
            f"exceed its {target.hbm.bytes:,} bytes of HBM (lower --context or --batch, or choose a larger target)"
        )
    return "\n".join(lines)


def compile_llm(
    model: str,
    target: Target,
    dtype: str,
    batch: int,
    context: int,
    prompt_len: int,
    progress: Callable[[str], None] | None = None,
    quantize: str | None = None,
    calibration: str | None = None,
) -> tuple[TBinary, Any]:
    """Import a causal LM (HF dir or .gguf), print its memory plan, compile prefill + decode buckets.

    `quantize` ("fp8" or "fp8-row") runs quantize-fp8 (docs/quantization.md); the memory plan then
    still counts the weights in `dtype`, an upper bound.
    """
    from tasic.frontend.llm import import_llm

    llm = import_llm(model, batch=batch, context=context, prompt_len=prompt_len)
    element_bytes = 4 if dtype == "f32" else 2
    weight_bytes = sum(int(llm.weights[name].size) for name in llm.weights.names) * element_bytes
    shapes = {name: tuple(array.shape) for name, array in llm.initial_state().items()}
    plan = memory_plan(weight_bytes, shapes, element_bytes, target)
    if progress:
        progress(plan)
    metadata = {
        "model": str(model),
        "llm": {"batch": batch, "context": context, "prompt_len": prompt_len},
        **({"quantize": quantize} if quantize else {}),
    }
    pipeline = llm_pipeline(target, dtype, context, quantize, calibration)
    binary = compile_module(llm.module, llm.weights, target, dtype, pipeline, metadata, progress)
    buckets = sorted(int(name.split("_")[1]) for name in binary.entry_points if name.startswith("decode_"))
    binary.metadata["llm"]["buckets"] = buckets
    if progress:
        progress(f"  SRAM used      {binary.metadata['sram_bytes']:,} bytes; decode buckets {buckets}")
        if quantize:
            stored = sum(s.nbytes for s in binary.symbols if s.kind == "weight")
            progress(f"  weights        {stored:,} bytes in HBM after {quantize} quantization")
    return binary, llm.tokenizer


@dataclass
class Stats:
    """Cycles and wall time of the entry points run so far."""

    prefill: list[Report] = field(default_factory=list)
    decode: list[Report] = field(default_factory=list)
    wall_prefill: float = 0.0
    wall_decode: float = 0.0


class LlmSession:
    """A machine holding an LLM binary: prefill, then decode steps on the right context bucket."""

    def __init__(self, binary: TBinary, target: Target, *, timing_only: bool = False) -> None:
        if "llm" not in binary.metadata:
            raise CompileError("this binary has no prefill/decode entry points: compile an LLM with --context")
        self.config = binary.metadata["llm"]
        self.machine = Machine(binary, target, timing_only=timing_only)
        self.stats = Stats()

    def prefill(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Run @prefill; returns logits [B, prompt_len, V]."""
        start = time.perf_counter()
        result = self.machine.run("prefill", inputs)
        self.stats.wall_prefill += time.perf_counter() - start
        self.stats.prefill.append(result.report)
        return result.outputs.get("logits", np.zeros(0))

    def decode(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Run the smallest decode bucket holding the written slot; returns logits [B, 1, V]."""
        slot = int(inputs["cache_position"][0])
        bucket = next((b for b in self.config["buckets"] if b > slot), None)
        if bucket is None:
            raise CompileError(f"slot {slot} is past the compiled context {self.config['context']}")
        start = time.perf_counter()
        result = self.machine.run(f"decode_{bucket}", inputs)
        self.stats.wall_decode += time.perf_counter() - start
        self.stats.decode.append(result.report)
        return result.outputs.get("logits", np.zeros(0))

    def step(self, entry: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The `Step` interface of tasic.frontend.llm (entry "prefill" or "decode")."""
        run = self.prefill if entry == "prefill" else self.decode
        return {"logits": run(dict(inputs))}


def sample(logits: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy when temperature is 0, else top-k sampling at the temperature; one token per row."""
    if temperature <= 0:
        return logits.argmax(-1)
    scaled = logits.astype(np.float64) / temperature
    if 0 < top_k < scaled.shape[-1]:
        cutoff = np.sort(scaled, axis=-1)[:, -top_k][:, None]
        scaled = np.where(scaled < cutoff, -np.inf, scaled)
    probs = np.exp(scaled - scaled.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.array([rng.choice(len(p), p=p) for p in probs])


def generate(
    session: LlmSession,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
    eos: int | None = None,
    on_token: Callable[[int, list[int]], None] | None = None,
) -> list[list[int]]:
    """New tokens for each prompt (left-padded into the batch); on_token(row, tokens) after each step."""
    from tasic.frontend.errors import FrontendError
    from tasic.frontend.llm import prefill_inputs

    config = session.config
    if len(prompts) > config["batch"]:
        raise FrontendError(f"{len(prompts)} prompts but the binary was compiled for a batch of {config['batch']}")
    longest = max(len(p) for p in prompts)
    if longest > config["prompt_len"]:
        raise FrontendError(
            f"prompt has {longest} tokens but the binary takes at most {config['prompt_len']} "
            f"(compiled max context {config['context']}): recompile with a larger --seq-len"
            " (tasic generate MODEL: --prompt-len)"
        )
    most = config["context"] - config["prompt_len"] + 1  # the prefill's token, then one per free cache slot
    if not 1 <= max_new_tokens <= most:
        raise FrontendError(
            f"cannot generate {max_new_tokens} tokens: {config['prompt_len']} prompt slots in a context of"
            f" {config['context']} leave room for 1 to {most}; ask for fewer or recompile with a larger --context"
        )
    rows = list(prompts) + [prompts[0]] * (config["batch"] - len(prompts))
    inputs = prefill_inputs(rows, config["prompt_len"], config["context"])
    mask, rng = inputs["attention_mask"], np.random.default_rng(seed)
    positions = mask.sum(1, keepdims=True)
    tokens = sample(session.prefill(inputs)[:, -1], temperature, top_k, rng)
    generated: list[list[int]] = [[int(t)] for t in tokens[: len(prompts)]]
    for slot in range(config["prompt_len"], config["prompt_len"] + max_new_tokens - 1):
        if on_token:
            for row in range(len(prompts)):
                on_token(row, generated[row])
        if eos is not None and all(eos in g for g in generated):
            break
        mask[:, slot] = 1
        step = {
            "input_ids": tokens[:, None].astype(np.int64),
            "position_ids": positions.astype(np.int64),
            "cache_position": np.array([slot], dtype=np.int64),
            "attention_mask": mask.copy(),
        }
        tokens = sample(session.decode(step)[:, -1], temperature, top_k, rng)
        positions = positions + 1
        for row in range(len(prompts)):
            generated[row].append(int(tokens[row]))
    if on_token:
        for row in range(len(prompts)):
            on_token(row, generated[row])
    return [g[: g.index(eos) + 1] if eos is not None and eos in g else g for g in generated]


def report_lines(session: LlmSession, target: Target) -> list[str]:
    """Prefill and decode cycles, simulated rates and utilisation, simulator wall rate."""
    stats, batch = session.stats, session.config["batch"]
    prefill = stats.prefill[0]
    lines = [
        f"prefill: {prefill.total_cycles:,} cycles for {session.config['prompt_len']} slots x batch {batch}; "
        f"time to first token {prefill.seconds * 1e3:.3f} ms at {target.clock_hz / 1e9:g} GHz",
    ]
    if stats.decode:
        cycles = [r.total_cycles for r in stats.decode]
        seconds = sum(r.seconds for r in stats.decode)
        mxu = sum(r.mxu_utilization * r.total_cycles for r in stats.decode) / sum(cycles)
        hbm = sum(r.hbm_utilization * r.total_cycles for r in stats.decode) / sum(cycles)
        lines += [
            f"decode: {len(cycles)} steps, {min(cycles):,} to {max(cycles):,} cycles per step "
            f"(mean {int(np.mean(cycles)):,}); simulated {batch * len(cycles) / seconds:,.0f} tokens/s",
            f"decode utilisation: MXU {mxu * 100:.1f} %, HBM bandwidth {hbm * 100:.1f} %",
            f"simulator wall clock: prefill {stats.wall_prefill:.2f} s, decode {stats.wall_decode / len(cycles):.3f} "
            f"s per step ({batch * len(cycles) / max(stats.wall_decode, 1e-9):.2f} tokens/s)",
        ]
    return lines
